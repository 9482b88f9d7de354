"""Far-future and far-past events in a live stream, before and after a restart (embedded broker).

One event a year ahead (beyond the wall clock) and one three days ahead of the stream (behind the
wall clock, but far ahead of the partition's watermark) must not move the watermark: the events
after them are all processed, and no window is made up between. A far-past event is late. The
worker stops (checkpoint) and a new one takes over: the same holds, and the windows are exactly
those of the stream, once each, none missing.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import FAST_GROUP

pytestmark = pytest.mark.integration

WINDOW_MS = 1_000
DAY_MS = 86_400_000
HOSTS = ("h0", "h1", "h2")
N_WINDOWS = 60


def _app(bootstrap: str, topic: str, group: str, data_dir: Any) -> Any:
    from cutstream.config import AppConfig
    from detector.config import ForestConfig, ModelConfig, ScoringConfig
    from streams.config import DetectorSpec, MeasureSpec

    spec = DetectorSpec(
        name="guard",
        topic=topic,
        timestamp_field="ts",
        dimensions=("host",),
        # zero-filled missing windows: a made-up window would show as a record with missingWindow
        measures=(MeasureSpec(field="value", aggregation="sum", missing="zero"),),
        window_ms=WINDOW_MS,
        idle_timeout_ms=0,  # windows close by event time only
        model=ModelConfig(
            forest=ForestConfig(n_trees=5, sample_size=32, shingle_size=1, seed=3),
            scoring=ScoringConfig(learning_points=4, learning_ms=0),
        ),
    )
    return AppConfig(
        brokers=bootstrap,
        data_dir=data_dir,
        group_id=group,
        kafka=dict(FAST_GROUP),
        results_topic=f"{topic}.results",
        detectors=(spec,),
    )


def _ev(ts: int, host: str, value: float = 1.0) -> tuple[bytes, bytes]:
    return host.encode(), json.dumps({"ts": ts, "host": host, "value": value}).encode()


def _stream(base: int, first: int, last: int) -> list[tuple[bytes, bytes]]:
    """Two events per host and window, with the intruders in the middle of the range."""
    out: list[tuple[bytes, bytes]] = []
    mid = (first + last) // 2
    for w in range(first, last):
        for i, host in enumerate(HOSTS):
            for j in range(2):
                out.append(_ev(base + w * WINDOW_MS + 100 + 400 * j, host, 10.0 + i + (w % 7)))
        if w == mid - 3:
            out.append(_ev(base + 400 * DAY_MS + w, "h0"))  # a year ahead of the wall clock
        if w == mid - 1:
            out.append(_ev(base + 3 * DAY_MS + w, "h1"))  # behind the wall clock, days ahead of the stream
            out.append(_ev(base + 3 * DAY_MS + w, "intruder"))  # a series that never really exists
        if w == mid + 2:
            out.append(_ev(base - 30 * DAY_MS, "h2"))  # a month in the past
    return out


def _produce(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    for key, value in events:
        p.produce(topic, value, key, partition=0)
    assert p.flush(30) == 0


def test_far_future_and_far_past_events_move_nothing_before_and_after_a_restart(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any
) -> None:
    import pyarrow.dataset as ds

    from streams.checkpoint import CheckpointStore
    from streams.worker import Worker

    topic = topic_factory("guard", partitions=1)
    app = _app(bootstrap, topic, group_factory(), tmp_path)
    # five days behind the wall clock: "three days ahead of the stream" is still in the past
    base = (int(time.time() * 1000) - 5 * DAY_MS) // WINDOW_MS * WINDOW_MS
    half = N_WINDOWS // 2
    offset = 0

    reasons = {"future_timestamp": 3, "late": 1}
    for first, last in ((0, half), (half, N_WINDOWS)):
        events = _stream(base, first, last)
        _produce(bootstrap, topic, events)
        worker = Worker(app)  # the second one restores the first one's checkpoint
        counters = worker.run_until_idle(idle_s=2.0, timeout_s=120)
        assert counters.events_in == len(events)
        assert counters.rejects == reasons
        # the checkpoint holds the stream's watermark, not an intruder's, and no made-up window
        ckpt = CheckpointStore(tmp_path, app.group_id).load(topic, 0)
        assert ckpt is not None and ckpt.next_offset == offset + len(events)
        windows = ckpt.windows["guard"]
        assert windows["watermark"] == base + (last - 1) * WINDOW_MS + 500
        assert windows["counters"].get("missing_windows", 0) == 0
        assert "intruder" not in json.dumps(windows["combos"])
        offset += len(events)
        if first:
            assert counters.restores == 1

    # every window of every host, once, from data; nothing made up (the last window is still open)
    table = ds.dataset(tmp_path / "results", format="parquet", partitioning="hive").to_table()
    rows = sorted(
        zip(
            [d[0]["value"] for d in table.column("dimensionList").to_pylist()],
            table.column("windowStart").cast("int64").to_pylist(),
            table.column("missingWindow").to_pylist(),
            table.column("aggregatedMeasureValue").to_pylist(),
            strict=True,
        )
    )
    expected = sorted(
        (host, base + w * WINDOW_MS, False, 2 * (10.0 + i + (w % 7)))
        for w in range(N_WINDOWS - 1)
        for i, host in enumerate(HOSTS)
    )
    assert rows == expected


def test_a_far_past_first_event_does_not_pin_a_fresh_partition(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any
) -> None:
    """The partition's very first event is from 1990: the real events after it are all processed
    (none is "future" of a watermark that one event set), its own window is one result, and no
    window is made up between 1990 and now; after a restart the stream goes on the same way."""
    import pyarrow.dataset as ds

    from streams.worker import Worker

    topic = topic_factory("guard-past", partitions=1)
    app = _app(bootstrap, topic, group_factory(), tmp_path)
    base = (int(time.time() * 1000) - DAY_MS) // WINDOW_MS * WINDOW_MS
    stray = 631_152_000_000  # 1990-01-01
    half = N_WINDOWS // 2
    first_events = [_ev(stray, "h2", 99.0)] + [
        _ev(base + w * WINDOW_MS + 100, host, 1.0) for w in range(half) for host in HOSTS
    ]
    rest = [_ev(base + w * WINDOW_MS + 100, host, 1.0) for w in range(half, N_WINDOWS) for host in HOSTS]
    for events in (first_events, rest):
        _produce(bootstrap, topic, events)
        counters = Worker(app).run_until_idle(idle_s=2.0, timeout_s=120)
        assert counters.events_in == len(events)
        assert counters.rejects == {}
    table = ds.dataset(tmp_path / "results", format="parquet", partitioning="hive").to_table()
    assert not any(table.column("missingWindow").to_pylist())
    starts = table.column("windowStart").cast("int64").to_pylist()
    assert starts.count(stray) == 1
    assert sorted(s for s in starts if s != stray) == sorted(
        base + w * WINDOW_MS for w in range(N_WINDOWS - 1) for _ in HOSTS
    )
