"""What only a real Kafka gets right, used where it is there: end offsets (consumer lag) and
``offsets_for_times`` (``cutstream worker --from``). Tansu lacks both (../shared/DESIGN.md): there the
worker falls back to the fetch-cached high watermark for lag and refuses ``--from`` in one line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.test_worker_basic import BASE_MS, WINDOW_MS, _app

pytestmark = pytest.mark.integration


@pytest.mark.brokers("tansu", "kafka")
def test_the_worker_tells_tansu_from_kafka(bootstrap: str, broker_kind: str) -> None:
    from streams.kafka import broker_is_tansu

    assert broker_is_tansu(bootstrap) is (broker_kind == "tansu")


@pytest.mark.brokers("kafka")
def test_end_offsets_follow_what_was_produced(bootstrap: str, topic_factory: Any) -> None:
    """Kafka only: Tansu's ListOffsets answers are stale, so lag there uses the fetch cache."""
    from confluent_kafka import Producer

    from streams.kafka import EndOffsets

    topic = topic_factory("ends", partitions=2)
    p = Producer({"bootstrap.servers": bootstrap})
    for _i in range(7):
        p.produce(topic, value=b"x", partition=0)
    for _i in range(3):
        p.produce(topic, value=b"y", partition=1)
    assert p.flush(10) == 0
    ends = EndOffsets({"bootstrap.servers": bootstrap})
    tps = [(topic, 0), (topic, 1)]
    wait_for(lambda: ends.poll(tps) == {(topic, 0): 7, (topic, 1): 3}, message="end offsets 7 and 3")
    for _i in range(5):
        p.produce(topic, value=b"z", partition=1)
    assert p.flush(10) == 0
    wait_for(lambda: ends.poll(tps) == {(topic, 0): 7, (topic, 1): 8}, message="end offset 8")


def _timed_events(bootstrap: str, topic: str, n_windows: int) -> list[int]:
    """Host ``a``, two events per window, each record's timestamp its event time; returns the times."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    times = []
    for w in range(n_windows):
        for j in range(2):
            ts = BASE_MS + w * WINDOW_MS + 100 + 300 * j
            p.produce(
                topic,
                key=b"a",
                value=json.dumps({"ts": ts, "host": "a", "value": 1.0 + w % 3}).encode(),
                timestamp=ts,
            )
            times.append(ts)
    assert p.flush(10) == 0
    return times


@pytest.mark.brokers("kafka")
def test_worker_from_a_time_starts_at_the_first_event_at_or_after_it(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any
) -> None:
    """Kafka only (``offsets_for_times``): windows before ``--from`` are never read, the rest all are."""
    import pyarrow.dataset as ds

    from streams.config import WorkerSettings
    from streams.worker import Worker

    topic = topic_factory("from", partitions=2)
    n_windows, first = 30, 12
    times = _timed_events(bootstrap, topic, n_windows)
    start_ms = BASE_MS + first * WINDOW_MS
    app = _app(bootstrap, topic, group_factory(), tmp_path)
    worker = Worker(app, settings=WorkerSettings(start_from_ms=start_ms))
    counters = worker.run_until_idle(idle_s=3.0, timeout_s=120)

    assert counters.events_in == sum(1 for t in times if t >= start_ms)
    table = ds.dataset(tmp_path / "results", format="parquet", partitioning="hive").to_table()
    starts = sorted(int(t.timestamp() * 1000) for t in table.column("windowStart").to_pylist())
    assert starts == [BASE_MS + w * WINDOW_MS for w in range(first, n_windows)]
    assert counters.rejects == {}


def test_worker_from_a_time_is_refused_on_tansu_in_one_line(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any
) -> None:
    from streams.config import WorkerSettings
    from streams.errors import StreamsError
    from streams.worker import Worker

    topic = topic_factory("from-tansu")
    app = _app(bootstrap, topic, group_factory(), tmp_path)
    worker = Worker(app, settings=WorkerSettings(start_from_ms=BASE_MS))
    with pytest.raises(StreamsError, match="--from needs offsets_for_times") as info:
        worker.run_until_idle(idle_s=1.0, timeout_s=30)
    assert "\n" not in str(info.value)
