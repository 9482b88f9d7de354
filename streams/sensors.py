"""What the worker tells the outside about itself, through one interface (faust's ``Sensor`` pattern).

The worker and its parts call the hooks of one :class:`Sensor` (a :class:`SensorDelegate` that
hands every call to the sensors it holds); each sensor keeps what it needs:

- :class:`CounterSensor`: the counters of :meth:`streams.worker.Worker.counters` (thread-safe);
- :class:`PrometheusSensor`: the ``/metrics`` figures and the health state of
  :class:`streams.metrics.WorkerMetrics`;
- :class:`StatusFileSensor`: the JSON status file (``--status-file``), about once a second;
- test sensors (fault injection) live in ``streams.testing``.

A hook is cheap and never raises on purpose; the default of every hook does nothing, so a sensor
overrides only what it watches.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sinks.base import Partition
from streams.metrics import WorkerMetrics


@dataclass(frozen=True)
class Gauges:
    """Levels the worker measures about once a second (:meth:`Sensor.on_report`)."""

    lag: dict[Partition, int]  # messages behind the fetch-cached high watermark, per partition
    series: int  # series whose model the worker holds in memory
    model_bytes: int
    #: the model budget (streams/park.py): parked now, and totals parked, read back, dropped
    models: tuple[int, int, int, int] = (0, 0, 0, 0)
    alerts: tuple[int, int, int, int] | None = None  # sent total, pending, dead-lettered total, dead now
    #: the results topic's transactions (exactly-once only): committed, records produced again
    results_txn: tuple[int, int] | None = None


class Sensor:
    """The hooks; every one does nothing unless a sensor overrides it."""

    def on_consumed(self, tp: Partition, n: int) -> None:
        """``n`` events read from the partition (valid or not)."""

    def on_dead_lettered(self, reason: str, n: int) -> None:
        """``n`` events sent to the dead-letter topic for ``reason``."""

    def on_skipped(self, reason: str, n: int) -> None:
        """``n`` windows that get no result (``non_finite_window``)."""

    def on_scored(self, n: int) -> None:
        """``n`` windows scored; their records handed to the sinks."""

    def on_acked(self, latency_s: float, n: int) -> None:
        """A batch of ``n`` records acknowledged by the broker ``latency_s`` after its windows closed."""

    def on_written(self, tp: Partition, rows: int, files: int) -> None:
        """``rows`` records of the partition written to Parquet in ``files`` files."""

    def on_checkpoint_saved(self, tp: Partition, next_offset: int) -> None:
        """The partition's checkpoint is durable; its offset is committed next."""

    def on_checkpoint_postponed(self, tp: Partition, why: str) -> None:
        """A sink could not flush: the partition's checkpoint waits for the next interval."""

    def on_committed(self, tp: Partition, next_offset: int, ok: bool) -> None:
        """The offset commit after a checkpoint (``ok`` False: it failed; the checkpoint still holds)."""

    def on_restored(self, tp: Partition, next_offset: int, removed: int) -> None:
        """The partition was restored from its checkpoint; ``removed`` outputs written after it deleted."""

    def on_series_split(self, n: int) -> None:
        """``n`` series seen on a second partition."""

    def on_assignment(self, tps: Sequence[Partition]) -> None:
        """The partitions the worker holds now."""

    def on_broker_error(self, kind: str, fatal: bool) -> None:
        """A Kafka client error of ``kind`` (transport, all_brokers_down, ...)."""

    def on_report(self, gauges: Gauges) -> None:
        """About once a second, and on every assignment change."""

    def on_tick(self) -> None:
        """One pass of the worker loop."""

    def on_stopped(self) -> None:
        """The worker has stopped."""


class SensorDelegate(Sensor):
    """Hands every hook to each of ``sensors``, in order (faust's ``SensorDelegate``)."""

    def __init__(self, sensors: Sequence[Sensor]) -> None:
        self.sensors = list(sensors)


def _fan_out(name: str) -> Any:
    def hook(self: SensorDelegate, *args: Any) -> None:
        for sensor in self.sensors:
            getattr(sensor, name)(*args)

    hook.__name__ = name
    hook.__doc__ = getattr(Sensor, name).__doc__
    return hook


for _name in [n for n in vars(Sensor) if n.startswith("on_")]:
    setattr(SensorDelegate, _name, _fan_out(_name))


@dataclass
class WorkerCounters:
    """What the worker did; read with :meth:`streams.worker.Worker.counters` (a copy)."""

    events_in: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    windows_closed: int = 0
    results_produced: int = 0
    results_written: int = 0
    parquet_files: int = 0
    checkpoints: int = 0
    commits: int = 0
    commit_failures: int = 0
    checkpoints_postponed: int = 0
    restores: int = 0
    series_split: int = 0
    assigned: list[str] = field(default_factory=list)
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    lag_messages: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in self.__dict__.items()
        }


class CounterSensor(Sensor):
    """The worker's counters and its window-close → acknowledgement latencies (the last 20,000)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = WorkerCounters()
        self._latencies: collections.deque[float] = collections.deque(maxlen=20_000)

    def snapshot(self) -> WorkerCounters:
        """A consistent copy (safe from any thread), with the latency percentiles."""
        with self._lock:
            snap = WorkerCounters(**self._c.as_dict())
            lat = np.fromiter(self._latencies, dtype=np.float64) if self._latencies else None
        if lat is not None:
            snap.latency_ms_p50 = float(np.percentile(lat, 50))
            snap.latency_ms_p99 = float(np.percentile(lat, 99))
        return snap

    @property
    def events_in(self) -> int:
        with self._lock:
            return self._c.events_in

    def _reject(self, reason: str, n: int) -> None:
        with self._lock:
            self._c.rejects[reason] = self._c.rejects.get(reason, 0) + n

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._c, name, getattr(self._c, name) + n)

    def on_consumed(self, tp: Partition, n: int) -> None:
        self._add("events_in", n)

    def on_dead_lettered(self, reason: str, n: int) -> None:
        self._reject(reason, n)

    def on_skipped(self, reason: str, n: int) -> None:
        self._reject(reason, n)

    def on_scored(self, n: int) -> None:
        with self._lock:
            self._c.windows_closed += n
            self._c.results_produced += n

    def on_acked(self, latency_s: float, n: int) -> None:
        with self._lock:
            self._latencies.append(latency_s * 1000.0)

    def on_written(self, tp: Partition, rows: int, files: int) -> None:
        with self._lock:
            self._c.results_written += rows
            self._c.parquet_files += files

    def on_checkpoint_saved(self, tp: Partition, next_offset: int) -> None:
        self._add("checkpoints")

    def on_checkpoint_postponed(self, tp: Partition, why: str) -> None:
        self._add("checkpoints_postponed")

    def on_committed(self, tp: Partition, next_offset: int, ok: bool) -> None:
        self._add("commits" if ok else "commit_failures")

    def on_restored(self, tp: Partition, next_offset: int, removed: int) -> None:
        self._add("restores")

    def on_series_split(self, n: int) -> None:
        self._add("series_split", n)

    def on_assignment(self, tps: Sequence[Partition]) -> None:
        with self._lock:
            self._c.assigned = sorted(f"{t}-{p}" for t, p in tps)

    def on_report(self, gauges: Gauges) -> None:
        with self._lock:
            self._c.lag_messages = sum(gauges.lag.values()) if gauges.lag else None


class PrometheusSensor(Sensor):
    """Feeds :class:`streams.metrics.WorkerMetrics` (``/metrics``, ``/healthz``, ``/readyz``)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self._lagged: set[Partition] = set()

    def on_consumed(self, tp: Partition, n: int) -> None:
        self.metrics.events_in(n)

    def on_dead_lettered(self, reason: str, n: int) -> None:
        self.metrics.dead_lettered(reason, n)

    def on_scored(self, n: int) -> None:
        self.metrics.scored(n)

    def on_acked(self, latency_s: float, n: int) -> None:
        self.metrics.window_closed(latency_s, n)

    def on_assignment(self, tps: Sequence[Partition]) -> None:
        gone = self._lagged - set(tps)
        self.metrics.forget_partitions(gone)
        self._lagged -= gone
        self.metrics.set_ready(bool(tps), "no partitions assigned")

    def on_broker_error(self, kind: str, fatal: bool) -> None:
        self.metrics.broker_error(kind)

    def on_report(self, gauges: Gauges) -> None:
        for (topic, partition), lag in gauges.lag.items():
            self.metrics.lag(partition, lag, topic)
            self._lagged.add((topic, partition))
        self.metrics.series_tracked(gauges.series)
        self.metrics.model_bytes(gauges.model_bytes)
        self.metrics.models(*gauges.models)
        if gauges.alerts is not None:
            self.metrics.alerts(*gauges.alerts)
        if gauges.results_txn is not None:
            self.metrics.results_transactions(*gauges.results_txn)

    def on_tick(self) -> None:
        self.metrics.tick()

    def on_stopped(self) -> None:
        self.metrics.set_ready(False, "stopped")


class StatusFileSensor(Sensor):
    """Writes the counters as JSON to ``path`` on every report (``--status-file``; the dashboard
    reads ``<data_dir>/status/*.json``), through a temporary file and a rename."""

    def __init__(self, path: str, counters: CounterSensor, group: str) -> None:
        self.path = path
        self.counters = counters
        self.group = group

    def write(self, stopped: bool = False) -> None:
        data = {
            "pid": os.getpid(),
            "group": self.group,
            "time_ms": int(time.time() * 1000),
            **self.counters.snapshot().as_dict(),
        }
        if stopped:  # the dashboard counts this worker as stopped at once, not after the file ages
            data["stopped"] = True
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)

    def on_report(self, gauges: Gauges) -> None:
        self.write()

    def on_stopped(self) -> None:
        self.write(stopped=True)
