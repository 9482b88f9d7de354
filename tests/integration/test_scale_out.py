"""Scale-out: three worker processes in one group over 12 partitions give a single worker's results.

Kafka is the distributed engine: the three ``cutstream worker`` processes only share a group id.
The test waits until the group is stable (the 12 partitions split among the three, disjoint), then
produces a known stream keyed by series. Every worker consumes part of it, and the Parquet result
set (every series × window, with its scores) equals the result set of one worker over the same
stream. Throughput is measured by ``cutstream bench scaleout`` (BENCHMARKS.md), never asserted here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.integration.worker_procs import Stream, WorkerProc, keyed_rows, produce, read_results, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 12
COMPARED = [
    "detectorName", "measure", "dimensionList", "aggregatedMeasureValue",
    "detectionPeriodStartTime", "detectionPeriodEndTime",
    "anomalyScore", "anomalyDecisionThreshold", "anomalyDecision", "anomalyConfidenceScore",
    "modelStage", "processedDataPoints", "expectedValue", "rawScore", "missingWindow",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _warm_kernels() -> None:
    """Compile the engine's numba kernels here first: the workers then load them from numba's on-disk
    cache instead of each compiling them (which, on a cold cache, takes longer than the waits below)."""
    import numpy as np

    from detector.config import ForestConfig, ModelConfig
    from detector.detector import Detector

    d = Detector(ModelConfig(forest=ForestConfig(n_trees=4, sample_size=8, shingle_size=2, seed=1)))
    n = 40
    d.process_many(["warm"] * n, np.arange(n, dtype=np.float64), np.arange(n, dtype=np.int64) * 1000)


def _complete(data_dir: Path, expected: int) -> Any:
    table = read_results(data_dir)
    return table if table is not None and table.num_rows >= expected else None


def _metric(port: int, name: str) -> float:
    """One unlabelled sample from a worker's /metrics endpoint."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} is not exported on port {port}")


def _assignments(workers: list[WorkerProc]) -> list[set[str]] | None:
    statuses = [w.read_status() for w in workers]
    if any(s is None for s in statuses):
        return None
    return [set(s["assigned"]) for s in statuses if s is not None]


# The classic protocol on Kafka is covered by test_rebalance.py; here Kafka runs the KIP-848 consumer
# protocol (Tansu never assigns with it), which keeps the suite at two runs of this long test.
@pytest.mark.parametrize(
    ("broker", "group_protocol"),
    [("tansu", "classic"), ("kafka", "consumer")],
    indirect=["broker"],
    ids=["tansu", "kafka-kip848"],
)
def test_three_workers_in_one_group_equal_one_worker(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Path, group_protocol: str
) -> None:
    stream = Stream(n_series=24, n_windows=50, per_window=2)
    events = stream.events()
    # no idle timeout: the last window of each series stays open
    expected = stream.n_series * (stream.n_windows - 1)
    topic = topic_factory("scale", partitions=PARTITIONS)

    # ---- three workers, one group: wait for a stable split of the 12 partitions, then produce
    group = group_factory()
    cfg = write_config(
        tmp_path / "three.yaml", topic, group, f"{topic}.results3", group_protocol=group_protocol
    )
    shared = tmp_path / "three"  # one data_dir for the group, as on a shared volume
    from streams.broker import free_port

    ports = [free_port() for _ in range(3)]  # each worker serves its own /metrics, /healthz, /readyz
    workers = [
        WorkerProc(cfg, bootstrap, shared, tmp_path / f"w{i}.log", "--metrics-port", str(port))
        for i, port in enumerate(ports)
    ]
    try:

        def stable() -> bool:
            sets = _assignments(workers)
            if sets is None or not all(sets):
                return False
            return sum(len(s) for s in sets) == PARTITIONS and len(set().union(*sets)) == PARTITIONS

        wait_for(stable, timeout_s=60, message="3 workers to split 12 partitions\n" + workers[0].log_tail())
        assert all(w.alive() for w in workers)
        produce(bootstrap, topic, events)
        three = wait_for(
            lambda: _complete(shared, expected),
            timeout_s=120,
            message="the 3-worker run to write every result\n" + "\n".join(w.log_tail(1500) for w in workers),
        )

        # the last events of the stream (in still-open windows) may arrive after the last result
        def read_all() -> list[dict[str, Any]] | None:
            statuses = [w.read_status() for w in workers]
            if not all(statuses) or sum(s["events_in"] for s in statuses if s) < len(events):
                return None
            return [s for s in statuses if s]

        statuses = wait_for(read_all, timeout_s=30, message="the workers to report every event")
        # operators see the same from outside: every worker is ready and counts its share
        for port in ports:
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        events_seen = [_metric(port, "cutstream_events_total") for port in ports]
        assert all(n > 0 for n in events_seen) and sum(events_seen) >= len(events), events_seen
        assert sum(_metric(port, "cutstream_scores_total") for port in ports) >= expected
        for w in workers:
            assert w.terminate() == 0, w.log_tail()
    finally:
        for w in workers:
            w.kill()

    # every worker did part of the work, and together they read the whole stream
    per_worker = [s["events_in"] for s in statuses]
    assert all(n > 0 for n in per_worker), per_worker
    assert sum(per_worker) >= len(events), per_worker

    # ---- one worker, its own group and data_dir, over the same stream
    single_dir = tmp_path / "one"
    cfg1 = write_config(tmp_path / "one.yaml", topic, group_factory(), f"{topic}.results1")
    one_worker = WorkerProc(cfg1, bootstrap, single_dir, tmp_path / "single.log")
    try:
        one = wait_for(
            lambda: _complete(single_dir, expected),
            timeout_s=120,
            message="the single-worker run\n" + one_worker.log_tail(),
        )
        assert one_worker.terminate() == 0, one_worker.log_tail()
    finally:
        one_worker.kill()

    three_rows = keyed_rows(three, ["timeseriesId", *COMPARED])  # raises on a duplicate (series, window)
    one_rows = keyed_rows(one, ["timeseriesId", *COMPARED])
    assert len(one_rows) == expected
    assert three_rows.keys() == one_rows.keys()
    diffs = [k for k in one_rows if three_rows[k] != one_rows[k]]
    assert not diffs, f"{len(diffs)} results differ, e.g. {one_rows[diffs[0]]} vs {three_rows[diffs[0]]}"
