"""streams.sensors and streams.testing: one hook interface; fault injection is a test sensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streams.errors import StreamsError
from streams.metrics import WorkerMetrics
from streams.sensors import CounterSensor, Gauges, PrometheusSensor, Sensor, SensorDelegate, StatusFileSensor
from streams.testing import KillAt


class _Recorder(Sensor):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def on_scored(self, n: int) -> None:
        self.calls.append(("on_scored", (n,)))


def test_the_delegate_hands_every_hook_to_every_sensor(tmp_path: Path) -> None:
    counters, recorder = CounterSensor(), _Recorder()
    metrics = WorkerMetrics(CollectorRegistry())
    status = StatusFileSensor(str(tmp_path / "s.json"), counters, "g")
    sensor = SensorDelegate([counters, PrometheusSensor(metrics), status, recorder])
    sensor.on_consumed(("t", 0), 5)
    sensor.on_dead_lettered("late", 2)
    sensor.on_skipped("non_finite_window", 1)
    sensor.on_scored(3)
    sensor.on_acked(0.25, 3)
    sensor.on_assignment([("t", 0), ("t", 1)])
    sensor.on_report(Gauges(lag={("t", 0): 7, ("t", 1): 1}, series=3, model_bytes=10))
    c = counters.snapshot()
    assert (c.events_in, c.windows_closed, c.results_produced, c.lag_messages) == (5, 3, 3, 8)
    assert c.rejects == {"late": 2, "non_finite_window": 1} and c.assigned == ["t-0", "t-1"]
    assert c.latency_ms_p99 == 250.0
    assert recorder.calls == [("on_scored", (3,))]
    assert json.loads((tmp_path / "s.json").read_text())["lag_messages"] == 8
    assert "stopped" not in json.loads((tmp_path / "s.json").read_text())
    sensor.on_stopped()  # the worker's last write says it stopped (the dashboard's liveness reads it)
    assert json.loads((tmp_path / "s.json").read_text())["stopped"] is True
    # the Prometheus side saw the same events
    assert metrics.registry.get_sample_value("cutstream_events_total") == 5
    assert metrics.registry.get_sample_value("cutstream_consumer_lag", {"topic": "t", "partition": "0"}) == 7


def test_fault_points_are_checked() -> None:
    assert (KillAt.parse("after-parquet:3").point, KillAt.parse("after-parquet:3").n) == ("after-parquet", 3)
    with pytest.raises(StreamsError, match="unknown fault point"):
        KillAt.parse("before-lunch:1")
    with pytest.raises(StreamsError, match="bad fault"):
        KillAt.parse("after-parquet:x")
    kill = KillAt("after-checkpoint", 2)
    kill.on_written(("t", 0), 1, 1)  # another point: not counted
    assert kill.passes == 0
