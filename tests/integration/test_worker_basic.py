"""The worker against the embedded broker: contract fields, the spike flagged, stages, dead letters."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from tests.conftest import FAST_GROUP, wait_for

pytestmark = pytest.mark.integration

BASE_MS = 1_704_067_200_000  # 2024-01-01 00:00:00 UTC
WINDOW_MS = 1_000
N_WINDOWS = 60
SPIKE_WINDOW = 48
LEARNING_POINTS = 16


def _app(bootstrap: str, topic: str, group: str, data_dir: Any) -> Any:
    """One detector; the idle timeout closes the last window (``skip``: no empty windows after it)."""
    from cutstream.config import AppConfig
    from detector.config import ForestConfig, ModelConfig, ScoringConfig
    from streams.config import DetectorSpec, MeasureSpec

    spec = DetectorSpec(
        name="shop",
        topic=topic,
        timestamp_field="ts",
        dimensions=("host",),
        measures=(MeasureSpec(field="value", aggregation="sum", missing="skip"),),
        window_ms=WINDOW_MS,
        idle_timeout_ms=1_000,
        model=ModelConfig(
            forest=ForestConfig(n_trees=20, sample_size=32, shingle_size=1, seed=7),
            scoring=ScoringConfig(learning_points=LEARNING_POINTS, learning_ms=0),
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


def _events() -> list[tuple[bytes, bytes]]:
    """Two series (host a, b), two events per window; a's window SPIKE_WINDOW is 10x its usual sum."""
    rng = random.Random(3)
    out: list[tuple[bytes, bytes]] = []
    for w in range(N_WINDOWS):
        for host in ("a", "b"):
            base = 10.0 + 2.0 * math.sin(w / 5.0) + rng.uniform(-0.3, 0.3)
            for j in range(2):
                v = base * (10.0 if host == "a" and w == SPIKE_WINDOW else 1.0) / 2
                ts = BASE_MS + w * WINDOW_MS + 100 + 300 * j
                out.append((host.encode(), json.dumps({"ts": ts, "host": host, "value": v}).encode()))
    return out


BAD = [
    (b"a", b"{not json"),
    (b"a", json.dumps({"host": "a", "value": 1.0}).encode()),
    (b"a", json.dumps({"ts": BASE_MS + 30 * WINDOW_MS + 500, "host": "a", "value": "lots"}).encode()),
]


def _read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    got: list[Any] = []
    try:
        wait_for(
            lambda: got.extend(m for m in c.consume(1000, 0.2) if not m.error()) or len(got) >= expected,
            timeout_s=20,
            message=f"{expected} messages on {topic}",
        )
    finally:
        c.close()
    return got


@pytest.mark.brokers("tansu", "kafka")
def test_worker_scores_windows_and_dead_letters_bad_input(
    bootstrap, broker_kind, topic_factory, group_factory, tmp_path
):
    from confluent_kafka import Producer

    from sinks.record import CONTRACT_NAMES, RESULT_SCHEMA, timeseries_id
    from streams.worker import Worker

    topic = topic_factory("worker-basic", partitions=2)
    events = _events()
    # the bad events go in the middle of the stream: the worker must go on after them
    middle = len(events) // 2
    stream = events[:middle] + BAD + events[middle:]
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value in stream:
        p.produce(topic, key=key, value=value)
    assert p.flush(10) == 0

    app = _app(bootstrap, topic, group_factory(), tmp_path)
    worker = Worker(app)
    counters = worker.run_until_idle(idle_s=3.0, timeout_s=240)

    assert counters.events_in == len(stream)
    assert sum(counters.rejects.values()) == 3
    assert counters.windows_closed == 2 * N_WINDOWS
    assert counters.results_written == 2 * N_WINDOWS
    assert counters.checkpoints >= 1 and counters.commits >= 1
    # consumer lag from ListOffsets end offsets on Kafka; from the fetch cache on Tansu (stale ListOffsets)
    assert (worker._end_offsets is not None) is (broker_kind == "kafka")
    # the Prometheus metrics count the same things
    reg = worker.metrics.registry
    assert reg.get_sample_value("cutstream_events_total") == len(stream)
    assert reg.get_sample_value("cutstream_windows_closed_total") == 2 * N_WINDOWS
    assert (
        sum(reg.get_sample_value("cutstream_dead_lettered_total", {"reason": r}) for r in counters.rejects)
        == 3
    )

    # ---- the results topic: one record per (series, window), every field present and typed
    msgs = _read_all(bootstrap, app.results_topic, 2 * N_WINDOWS)
    records = [json.loads(m.value()) for m in msgs]
    assert len(records) == 2 * N_WINDOWS
    assert all(m.key().decode() == r["timeseriesId"] for m, r in zip(msgs, records, strict=True))
    for r in records:
        assert set(RESULT_SCHEMA.names) <= set(r)
        assert isinstance(r["detectorName"], str) and r["detectorName"] == "shop"
        assert r["measure"] == "value"
        assert len(r["timeseriesId"]) == 64
        assert r["dimensionList"] in ([{"name": "host", "value": "a"}], [{"name": "host", "value": "b"}])
        assert isinstance(r["aggregatedMeasureValue"], float)
        assert len(r["detectionPeriodStartTime"]) == 19 and len(r["detectionPeriodEndTime"]) == 19
        assert 0.0 <= r["anomalyScore"] <= 100.0
        assert isinstance(r["anomalyDecisionThreshold"], float)
        assert r["anomalyDecision"] in (0, 1)
        assert 0.0 <= r["anomalyConfidenceScore"] <= 100.0
        assert r["modelStage"] in ("LEARNING", "INFERENCE")
        assert isinstance(r["processedDataPoints"], int)
        assert isinstance(r["expectedValue"], float | None)
        assert isinstance(r["windowStart"], int)
        assert r["missingWindow"] is False
    ts_a = timeseries_id("shop", "value", {"host": "a"})
    ts_b = timeseries_id("shop", "value", {"host": "b"})
    by_series: dict[str, list[dict[str, Any]]] = {ts_a: [], ts_b: []}
    for r in sorted(records, key=lambda r: r["windowStart"]):
        by_series[r["timeseriesId"]].append(r)
    for tsid, rs in by_series.items():
        assert [r["windowStart"] for r in rs] == [BASE_MS + w * WINDOW_MS for w in range(N_WINDOWS)], tsid
        assert rs[0]["detectionPeriodStartTime"] == "2024-01-01 00:00:00"
        assert rs[0]["detectionPeriodEndTime"] == "2024-01-01 00:00:01"
        stages = [r["modelStage"] for r in rs]
        first_inf = stages.index("INFERENCE")
        assert 0 < first_inf <= LEARNING_POINTS + 1 and set(stages[first_inf:]) == {"INFERENCE"}
        assert all(r["anomalyScore"] == 0.0 for r in rs[:first_inf])
        assert [r["processedDataPoints"] for r in rs] == list(range(1, N_WINDOWS + 1))
    spike = by_series[ts_a][SPIKE_WINDOW]
    assert spike["aggregatedMeasureValue"] > 5 * by_series[ts_a][SPIKE_WINDOW - 1]["aggregatedMeasureValue"]
    assert spike["anomalyDecision"] == 1, spike
    assert spike["anomalyScore"] == max(r["anomalyScore"] for r in by_series[ts_a])
    # series b has no spike: its scores stay below the spike's
    assert max(r["anomalyScore"] for r in by_series[ts_b][LEARNING_POINTS + 8 :]) < spike["anomalyScore"]

    # ---- Parquet holds the same records
    import pyarrow.dataset as ds

    table = ds.dataset(tmp_path / "results", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 2 * N_WINDOWS
    assert set(CONTRACT_NAMES) <= set(table.schema.names)
    pq_spike = table.filter(
        (ds.field("timeseriesId") == ts_a)
        & (ds.field("aggregatedMeasureValue") == spike["aggregatedMeasureValue"])
    )
    assert pq_spike.column("anomalyDecision").to_pylist() == [1]

    # ---- the dead-letter topic: the original bytes, the reason, where they came from
    dead = _read_all(bootstrap, f"{topic}.dlq", 3)
    assert sorted(m.value() for m in dead) == sorted(v for _, v in BAD)
    for m in dead:
        h = {k: v.decode() for k, v in m.headers()}
        assert h["cutstream-reason"]
        assert h["cutstream-topic"] == topic
        assert int(h["cutstream-offset"]) >= 0 and h["cutstream-partition"] in ("0", "1")
        assert m.key() == b"a"
    reasons = {m.value(): dict(m.headers())["cutstream-reason"].decode() for m in dead}
    assert "json" in reasons[BAD[0][1]]
    assert "timestamp" in reasons[BAD[1][1]]
    assert reasons[BAD[2][1]] != reasons[BAD[1][1]]
    assert sorted(counters.rejects) == sorted(set(reasons.values()))


def test_worker_starts_from_warm_start_models(bootstrap, topic_factory, group_factory, tmp_path):
    """Models saved by backfill are used from the first window: INFERENCE at once, warmStarted set."""
    import numpy as np
    from confluent_kafka import Producer

    from detector.detector import Detector
    from sinks.record import timeseries_id
    from streams.backfill import save_warm_start
    from streams.config import WorkerSettings
    from streams.worker import Worker

    topic = topic_factory("worker-warm", partitions=2)
    app = _app(bootstrap, topic, group_factory(), tmp_path)
    spec = app.detectors[0]
    det = Detector(spec.model)
    keys = [timeseries_id("shop", "value", {"host": h}) for h in ("a", "b")]
    history = 10.0 + 2.0 * np.sin(np.arange(40) / 5.0)
    for v in history:
        det.process_many(keys, np.array([v, v]), np.zeros(2, dtype=np.int64))
    warm = tmp_path / "warm.ckpt"
    assert save_warm_start(det, spec, warm) == 2

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value in _events()[: 2 * 2 * 10]:  # ten windows of both series
        p.produce(topic, key=key, value=value)
    assert p.flush(10) == 0
    worker = Worker(app, settings=WorkerSettings(warm_start=(str(warm),)))
    counters = worker.run_until_idle(idle_s=3.0, timeout_s=240)
    assert counters.results_written == 2 * 10

    import pyarrow.dataset as ds

    table = ds.dataset(tmp_path / "results", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 20
    assert set(table.column("modelStage").to_pylist()) == {"INFERENCE"}
    assert all(table.column("warmStarted").to_pylist())
    assert min(table.column("processedDataPoints").to_pylist()) == len(history) + 1
