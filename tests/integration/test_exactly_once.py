"""Exactly-once in Parquet: a worker SIGKILLed at random (seeded) points writes every window once.

The worker runs as ``python -m cutstream worker`` and is killed four times while it processes a
known stream: twice from outside when the number of Parquet files reaches a random target, and
twice by its own fault injection at the two delicate points of the flush (right after a Parquet
write, before the checkpoint; right after the checkpoint, before the commit). After the last
restart runs to the end, every (timeseriesId, window) is in Parquet exactly once and equals the
result of a fault-free run of the same stream, every field compared.

On Apache Kafka the results topic is exactly-once too (Kafka transactions): a fifth kill lands
right after a results transaction committed, and a ``read_committed`` consumer of the results
topic gets every (timeseriesId, window) once, equal to the fault-free run's. On Tansu it is
at-least-once: every result is there.
"""

from __future__ import annotations

import json
import random
import re
import signal
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import wait_for
from tests.integration.worker_procs import (
    Stream,
    WorkerProc,
    by_window,
    keyed_rows,
    produce,
    read_committed,
    read_results,
    result_files,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261123
COMPARED = [
    "detectorName",
    "measure",
    "dimensionList",
    "aggregatedMeasureValue",
    "detectionPeriodStartTime",
    "detectionPeriodEndTime",
    "anomalyScore",
    "anomalyDecisionThreshold",
    "anomalyDecision",
    "anomalyConfidenceScore",
    "modelStage",
    "processedDataPoints",
    "expectedValue",
    "rawScore",
    "missingWindow",
    "warmStarted",
    "expectedLow",
    "expectedHigh",
    "anomalyReason",
    "valueScore",
    "forestScore",
]
FAST_FLUSH = [
    "--max-batch",
    "20",
    "--poll-timeout",
    "0.05",
    "--parquet-interval",
    "0.05",
    "--checkpoint-interval",
    "0.5",
    "--checkpoint-events",
    "90",
]


def _said_once_per_run(logs: list[Path], line: str) -> int:
    """How many runs said ``line``, checking that each run that got as far as the broker's features
    (its lag source) said it once and the others not at all: an external kill of a run started
    after the stream was complete can come before that point."""
    said = 0
    for log in logs:
        run_text = log.read_text(errors="replace")
        n = run_text.count(line)
        assert n == int("consumer lag source=" in run_text), f"{log.name}: {line!r} {n} times"
        said += n
    return said


def _complete(data_dir, expected: int) -> bool:
    table = read_results(data_dir)
    return table is not None and table.num_rows >= expected


@pytest.mark.brokers("tansu", "kafka")
def test_sigkill_at_random_points_keeps_parquet_exactly_once(
    bootstrap, broker_kind, topic_factory, group_factory, tmp_path
):
    from cutstream.config import load_config
    from streams.worker import Worker

    stream = Stream(n_series=6, n_windows=120)
    expected = stream.n_series * (stream.n_windows - 1)  # no idle timeout: the last window stays open
    topic = topic_factory("exactly-once", partitions=2)
    produce(bootstrap, topic, stream.events())
    data = tmp_path / "killed"
    cfg = write_config(tmp_path / "killed.yaml", topic, group_factory(), f"{topic}.results")

    rng = random.Random(SEED)
    faults = [f"after-parquet:{rng.randint(2, 8)}", f"after-checkpoint:{rng.randint(1, 3)}"]
    if broker_kind == "kafka":
        faults.append(f"after-commit:{rng.randint(1, 3)}")
    rng.shuffle(faults)
    plan = [*faults, "external", "external"]
    logs = []
    for i, kind in enumerate(plan):
        extra = [] if kind == "external" else ["--fault", kind]
        w = WorkerProc(cfg, bootstrap, data, tmp_path / f"run{i}.log", *FAST_FLUSH, *extra)
        logs.append(w.log)
        if kind == "external":
            target = len(result_files(data)) + rng.randint(3, 15)
            wait_for(
                lambda w=w, target=target: (
                    len(result_files(data)) >= target or _complete(data, expected) or not w.alive()
                ),
                timeout_s=120,
                message=f"run {i} to write {target} files\n{w.log_tail()}",
            )
            assert w.alive(), w.log_tail()
            w.kill()
        else:
            # the worker kills itself at the fault point (or finishes the stream first: then we kill it)
            wait_for(
                lambda w=w: not w.alive() or _complete(data, expected),
                timeout_s=120,
                message=f"run {i} to reach {kind}\n{w.log_tail()}",
            )
            if w.alive():
                w.kill()
            else:
                assert w.wait(5) == -signal.SIGKILL, w.log_tail()
    # The final worker restores every checkpointed partition, deleting the Parquet files written after
    # each checkpoint, then re-runs from there: the results are complete only after that. (Waiting for
    # completeness alone can pass before a restore deletes files; waiting for a closed window never
    # ends when the checkpoints already reach the end of the stream.)
    n_ckpt = len(list((data / "checkpoints").rglob("*.ckpt")))
    final = WorkerProc(cfg, bootstrap, data, tmp_path / "final.log", *FAST_FLUSH)
    wait_for(
        lambda: (
            (s := final.read_status())
            and len(s["assigned"]) == 2
            and s["restores"] >= n_ckpt
            and (n_ckpt == 2 or s["events_in"] > 0)
        ),
        timeout_s=90,
        message=f"the final run to restore {n_ckpt} partitions\n{final.log_tail()}",
    )
    wait_for(lambda: _complete(data, expected), timeout_s=90, message=f"the final run\n{final.log_tail()}")
    assert final.terminate() == 0, final.log_tail()

    # the faults happened where they were meant to, and recovery removed the files they orphaned
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert text.count("fault injection: SIGKILL") == len(faults), text[-3000:]
    assert "partition restored" in text + final.log.read_text()
    removed = [int(n) for n in re.findall(r"parquet_removed=(\d+)", text + final.log.read_text())]
    assert any(n > 0 for n in removed), "no restore removed a Parquet file written after its checkpoint"

    killed = read_results(data)
    killed_rows = keyed_rows(killed, COMPARED)  # raises on any duplicate (series, window)
    assert len(killed_rows) == killed.num_rows == expected
    assert not any(killed.column("warmStarted").to_pylist()), "a checkpoint restore is not a warm start"

    # ---- the same stream, fault-free, in-process (other group, other data dir, default batching)
    clean_dir = tmp_path / "clean"
    app = load_config(
        write_config(tmp_path / "clean.yaml", topic, group_factory(), f"{topic}.results2"),
        brokers=bootstrap,
        data_dir=clean_dir,
    )
    counters = Worker(app).run_until_idle(idle_s=2.0, timeout_s=240)
    assert counters.results_written == expected
    clean_rows = keyed_rows(read_results(clean_dir), COMPARED)
    assert killed_rows.keys() == clean_rows.keys()
    diff = [k for k in clean_rows if clean_rows[k] != killed_rows[k]]
    assert not diff, (
        f"{len(diff)} results differ, e.g. {diff[0]}: {clean_rows[diff[0]]} vs {killed_rows[diff[0]]}"
    )

    starts = killed.column("windowStart").cast(pa.int64()).to_pylist()
    parquet_keys = set(zip(killed.column("timeseriesId").to_pylist(), starts, strict=True))
    if broker_kind == "tansu":
        # ---- the results topic is at-least-once: every (series, window) is there
        # auto falls back, once per run that got as far as the broker's features
        assert _said_once_per_run(logs, "results topic at-least-once") >= len(faults)
        seen = {
            (r["timeseriesId"], r["windowStart"])
            for r in _read_results_at_least(bootstrap, f"{topic}.results", expected)
        }
        assert seen == parquet_keys
        return
    # ---- Kafka: exactly-once on the results topic, for a read_committed consumer
    assert _said_once_per_run(logs, "results topic guarantee=exactly_once") >= len(faults)
    got = by_window(read_committed(bootstrap, f"{topic}.results"))  # raises on a duplicate
    assert got.keys() == parquet_keys
    clean_topic = by_window(read_committed(bootstrap, f"{topic}.results2"))
    assert clean_topic.keys() == parquet_keys
    diff = [k for k in got if got[k] != clean_topic[k]]
    assert not diff, (
        f"{len(diff)} results differ on the topic, e.g. {diff[0]}: {got[diff[0]]} vs {clean_topic[diff[0]]}"
    )
    # the kill after a checkpoint, before its transaction committed, left results that only that
    # checkpoint held: the next run produced them again
    assert "uncommitted results produced again" in text + final.log.read_text(), text[-3000:]


def _read_results_at_least(bootstrap: str, rt: str, expected: int) -> list[dict]:
    """Records of the results topic until ``expected`` distinct (series, window) were seen (Tansu's
    end offsets cannot be trusted to say where the topic ends)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    c.assign([TopicPartition(rt, p, 0) for p in c.list_topics(rt, timeout=10).topics[rt].partitions])
    out: list[dict] = []

    def drain() -> bool:
        out.extend(json.loads(m.value()) for m in c.consume(1000, 0.2) if not m.error())
        return len({(r["timeseriesId"], r["windowStart"]) for r in out}) >= expected

    try:
        wait_for(drain, timeout_s=20, message="every result on the results topic")
    finally:
        c.close()
    return out
