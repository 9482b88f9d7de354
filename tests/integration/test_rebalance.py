"""Two workers in one group split the partitions; one is SIGKILLed; the other takes over, losing nothing
(in Parquet; on Kafka on the results topic too, read_committed)."""

from __future__ import annotations

import time

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
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLUSH = ["--max-batch", "200", "--parquet-interval", "0.2", "--checkpoint-interval", "1.0"]


def _assigned(w: WorkerProc) -> set[str]:
    s = w.read_status()
    return set(s["assigned"]) if s else set()


@pytest.mark.parametrize(
    ("broker", "group_protocol"),
    [("tansu", "classic"), ("kafka", "classic"), ("kafka", "consumer")],  # KIP-848: Kafka 4 only
    indirect=["broker"],
    ids=["tansu", "kafka", "kafka-kip848"],
)
def test_survivor_takes_over_a_killed_workers_partitions(
    bootstrap, broker_kind, topic_factory, group_factory, tmp_path, group_protocol
):
    stream = Stream(n_series=8, n_windows=80)
    topic = topic_factory("rebalance", partitions=4)
    all_parts = {f"{topic}-{p}" for p in range(4)}
    half = stream.n_windows // 2
    produce(bootstrap, topic, stream.events(0, half))
    cfg = write_config(
        tmp_path / "w.yaml", topic, group_factory(), f"{topic}.results", group_protocol=group_protocol
    )
    data = tmp_path / "data"  # one data dir: the survivor restores the victim's checkpoints
    a = WorkerProc(cfg, bootstrap, data, tmp_path / "a.log", *FLUSH)
    b = WorkerProc(cfg, bootstrap, data, tmp_path / "b.log", *FLUSH)
    try:
        # both members hold partitions, together all of them, none twice
        wait_for(
            lambda: (
                _assigned(a)
                and _assigned(b)
                and _assigned(a) | _assigned(b) == all_parts
                and not _assigned(a) & _assigned(b)
            ),
            timeout_s=30,
            message=f"the group to split the partitions\n{a.log_tail()}\n{b.log_tail()}",
        )
        first_half = stream.n_series * (half - 1)
        wait_for(
            lambda: (t := read_results(data)) is not None and t.num_rows >= first_half,
            timeout_s=120,
            message="the first half of the stream in Parquet",
        )
        victim, survivor = (a, b) if len(_assigned(a)) >= len(_assigned(b)) else (b, a)
        taken = _assigned(victim)
        # what the victim had checkpointed when it died (the survivor must restore those partitions)
        checkpointed = {
            tp for tp in taken if any((data / "checkpoints").glob(f"*/{topic}/{tp.rsplit('-', 1)[1]}.ckpt"))
        }
        victim.kill()
        killed_at = time.monotonic()
        produce(bootstrap, topic, stream.events(half))
        wait_for(
            lambda: _assigned(survivor) == all_parts,
            timeout_s=15,
            message=f"the survivor to take over {sorted(taken)}\n{survivor.log_tail()}",
        )
        took_over_s = time.monotonic() - killed_at
        expected = stream.n_series * (stream.n_windows - 1)  # no idle timeout: the last window stays open
        wait_for(
            lambda: (t := read_results(data)) is not None and t.num_rows >= expected,
            timeout_s=60,
            message=f"every window in Parquet\n{survivor.log_tail()}",
        )
        assert survivor.terminate() == 0, survivor.log_tail()
    finally:
        a.kill()
        b.kill()
    assert took_over_s < 15
    table = read_results(data)
    rows = keyed_rows(table, ["aggregatedMeasureValue", "processedDataPoints"])  # raises on duplicates
    assert len(rows) == table.num_rows == expected
    # nothing lost: every series has every window, and its model saw every point (no restart from zero)
    by_series: dict[str, list[tuple[int, int]]] = {}
    for (tsid, start), (_value, processed) in rows.items():
        by_series.setdefault(tsid, []).append((start, processed))
    assert len(by_series) == stream.n_series
    for points in by_series.values():
        points.sort()
        assert [p for _, p in points] == list(range(1, stream.n_windows))
    log = survivor.log.read_text()
    for tp in checkpointed:  # a partition the victim never checkpointed is re-read from its start
        part = tp.rsplit("-", 1)[1]
        assert f"partition restored topic={topic} partition={part}" in log, log[-3000:]
    if broker_kind == "kafka":  # the results topic is exactly-once there (Kafka transactions)
        got = by_window(read_committed(bootstrap, f"{topic}.results"))  # raises on a duplicate
        assert got.keys() == rows.keys()
        assert all(got[k]["processedDataPoints"] == rows[k][1] for k in rows)
