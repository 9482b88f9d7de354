"""The detector worker: consume → parse → window → score → results topic, Parquet, alerts.

One worker process joins the consumer group ``AppConfig.group_id`` and subscribes to the topics of
its detectors; Kafka splits the partitions among the workers of the group, on one machine or many.
Each assigned partition has its own window state and checkpoint; the models of its series live in
one :class:`~detector.detector.Detector` per detector config, so that every series whose window
closed in the same pass is scored in one batched step, whatever partition it came from.

The recovery protocol (docs/ARCHITECTURE.md, "Stream processing"):

1. Results are produced to the results topic as soon as their windows close (at-least-once).
2. Every ``parquet_interval_s`` the results of a partition are written to Parquet in a file named
   after the input offsets they cover (``source = <topic>-<partition>``, first and last offset).
3. Every ``checkpoint_interval_s`` (or ``checkpoint_every_events``) a partition is flushed: the rest
   of its results go to Parquet, the producer is flushed (results and dead letters delivered), the
   checkpoint (windows, models, next offset) is written atomically, and only then the next offset
   is committed, synchronously.
4. When a partition is assigned, its checkpoint is loaded and every Parquet file of the partition
   that starts at or after the checkpoint's offset is deleted (``ParquetSink.delete_after``) before
   anything is processed: those files came from a run that died before its next checkpoint, and
   the re-run writes them again, possibly with other offset boundaries. Parquet is exactly-once.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from detector.detector import Detector
from sinks.parquet import ParquetSink
from sinks.record import RESULT_SCHEMA, STAGE_INFERENCE, STAGE_LEARNING, format_period
from streams.checkpoint import Checkpoint, CheckpointStore
from streams.config import DetectorSpec, WorkerSettings
from streams.errors import StreamsError
from streams.kafka import DeadLetterProducer, DeliveryTracker, consumer_config, ensure_topics, producer_config
from streams.metrics import MetricsConfig, WorkerMetrics
from streams.parse import EventParser
from streams.window import WindowState

if TYPE_CHECKING:
    from cutstream.config import AppConfig

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- result records


@dataclass(frozen=True)
class ResultColumns:
    """The result records of one scoring step as plain columns (numpy arrays and Python lists).

    Built once per step and turned into both the Arrow table (Parquet) and the JSON messages
    (results topic), so neither goes through the other's row objects.
    """

    detector_name: str
    measure: list[str]
    timeseries_id: list[str]
    dimension_lists: list[Any]
    value: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    period_start: list[str]
    period_end: list[str]
    scores: Any
    stage: list[str]
    missing: np.ndarray
    arrow: tuple[pa.Array, pa.Array] | None = None  # (timeseriesId, dimensionList), when cheap

    def __len__(self) -> int:
        return len(self.timeseries_id)

    @classmethod
    def of(cls, detector_name: str, closed: Any, scores: Any) -> ResultColumns:
        """``closed``: timeseries_id, measure, dimension_lists (lists of n), window_start_ms,
        window_end_ms, value, missing (arrays of n), like ``streams.window.ClosedWindows``."""
        starts = np.asarray(closed.window_start_ms, dtype=np.int64)
        ends = np.asarray(closed.window_end_ms, dtype=np.int64)
        period = {t: format_period(t) for t in np.unique(np.concatenate([starts, ends])).tolist()}
        inference = np.asarray(scores.inference, dtype=bool)
        return cls(
            detector_name=detector_name,
            measure=list(closed.measure),
            timeseries_id=list(closed.timeseries_id),
            dimension_lists=list(closed.dimension_lists),
            value=np.asarray(closed.value, dtype=np.float64),
            start_ms=starts,
            end_ms=ends,
            period_start=[period[t] for t in starts.tolist()],
            period_end=[period[t] for t in ends.tolist()],
            scores=scores,
            stage=np.where(inference, STAGE_INFERENCE, STAGE_LEARNING).tolist(),
            missing=np.asarray(closed.missing, dtype=bool),
            arrow=_arrow_columns(closed),
        )

    def table(self) -> pa.Table:
        """The records as a RESULT_SCHEMA table."""
        sc = self.scores
        f64 = np.float64
        columns = {
            "detectorName": pa.array([self.detector_name] * len(self), pa.string()),
            "measure": pa.array(self.measure, pa.string()),
            "timeseriesId": self.arrow[0] if self.arrow else pa.array(self.timeseries_id, pa.string()),
            "dimensionList": self.arrow[1]
            if self.arrow
            else pa.array(self.dimension_lists, RESULT_SCHEMA.field("dimensionList").type),
            "aggregatedMeasureValue": pa.array(self.value, from_pandas=True),
            "detectionPeriodStartTime": pa.array(self.period_start, pa.string()),
            "detectionPeriodEndTime": pa.array(self.period_end, pa.string()),
            "anomalyScore": pa.array(np.asarray(sc.anomaly_score, dtype=f64)),
            "anomalyDecisionThreshold": pa.array(np.asarray(sc.threshold, dtype=f64)),
            "anomalyDecision": pa.array(np.asarray(sc.decision, dtype=np.int8)),
            "anomalyConfidenceScore": pa.array(np.asarray(sc.confidence, dtype=f64)),
            "modelStage": pa.array(self.stage, pa.string()),
            "processedDataPoints": pa.array(np.asarray(sc.processed_points, dtype=np.int64)),
            "expectedValue": pa.array(np.asarray(sc.expected_value, dtype=f64), from_pandas=True),
            "rawScore": pa.array(np.asarray(sc.raw_score, dtype=f64), from_pandas=True),
            "windowStart": pa.array(self.start_ms, pa.timestamp("ms", tz="UTC")),
            "missingWindow": pa.array(self.missing),
            "warmStarted": pa.array(np.asarray(sc.warm_started, dtype=bool)),
        }
        return pa.Table.from_arrays([columns[f.name] for f in RESULT_SCHEMA], schema=RESULT_SCHEMA)

    def json(self) -> list[bytes]:
        """One JSON object per record: every RESULT_SCHEMA field, windowStart in epoch ms, NaN as null."""
        import msgspec

        sc = self.scores
        cols = (
            [self.detector_name] * len(self),
            self.measure,
            self.timeseries_id,
            self.dimension_lists,
            self.value.tolist(),
            self.period_start,
            self.period_end,
            np.asarray(sc.anomaly_score, dtype=np.float64).tolist(),
            np.asarray(sc.threshold, dtype=np.float64).tolist(),
            np.asarray(sc.decision, dtype=np.int64).tolist(),
            np.asarray(sc.confidence, dtype=np.float64).tolist(),
            self.stage,
            np.asarray(sc.processed_points, dtype=np.int64).tolist(),
            np.asarray(sc.expected_value, dtype=np.float64).tolist(),
            np.asarray(sc.raw_score, dtype=np.float64).tolist(),
            self.start_ms.tolist(),
            self.missing.tolist(),
            np.asarray(sc.warm_started, dtype=bool).tolist(),
        )
        # one JSON object per line (strings never hold a raw newline); non-finite floats become null
        lines = msgspec.json.Encoder().encode_lines(list(map(_json_record(), *cols)))
        return lines.split(b"\n")[:-1]


def _arrow_columns(closed: Any) -> tuple[pa.Array, pa.Array] | None:
    """timeseriesId and dimensionList as Arrow arrays where the windows offer them cheaply."""
    if hasattr(closed, "arrow_columns"):
        cols: tuple[pa.Array, pa.Array] | None = closed.arrow_columns()
        return cols
    if hasattr(closed, "timeseries_id_array") and hasattr(closed, "dimension_list_array"):
        return closed.timeseries_id_array(), closed.dimension_list_array()
    return None


@functools.cache
def _json_record() -> Any:
    """A msgspec Struct with the RESULT_SCHEMA field names, in order (encodes faster than dicts)."""
    import msgspec

    return msgspec.defstruct("ResultRecord", [(name, Any) for name in RESULT_SCHEMA.names])


def build_results(detector_name: str, closed: Any, scores: Any) -> pa.Table:
    """Result records (RESULT_SCHEMA) for closed windows and their scores, row for row."""
    return ResultColumns.of(detector_name, closed, scores).table()


def _table_to_ipc(tables: Sequence[pa.Table]) -> bytes:
    if not tables:
        return b""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, RESULT_SCHEMA) as writer:
        for t in tables:
            writer.write_table(t)
    return bytes(sink.getvalue().to_pybytes())


def _ipc_to_tables(data: bytes) -> list[pa.Table]:
    if not data:
        return []
    return [pa.ipc.open_stream(pa.py_buffer(data)).read_all()]


# --------------------------------------------------------------------------- state


@dataclass
class _Partition:
    """What the worker holds for one assigned input partition."""

    topic: str
    partition: int
    windows: dict[str, Any]
    series: dict[str, dict[str, None]]
    next_offset: int | None = None  # first offset not yet in the state
    parquet_offset: int | None = None  # first offset not yet covered by a Parquet file
    checkpoint_offset: int | None = None  # next_offset of the last checkpoint
    pending: list[pa.Table] = field(default_factory=list)  # results not yet in Parquet
    idle_written: list[pa.Table] = field(default_factory=list)  # results in the idle file at P
    events_since_checkpoint: int = 0
    dirty: bool = False
    last_checkpoint_at: float = field(default_factory=time.monotonic)
    last_parquet_at: float = field(default_factory=time.monotonic)

    @property
    def source(self) -> str:
        """The Parquet source of results derived from input offsets."""
        return f"{self.topic}-{self.partition}"

    @property
    def idle_source(self) -> str:
        """The Parquet source of results closed by the idle timeout after the last input."""
        return f"{self.topic}-{self.partition}.idle"


@dataclass
class WorkerCounters:
    """What the worker did; read with :meth:`Worker.counters` (a copy)."""

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


class Worker:
    """A detector worker in a consumer group (see the module docstring for the protocol).

    Example:
        >>> stop = threading.Event()                      # doctest: +SKIP
        >>> Worker(load_config(Path("detectors.yaml"))).run(stop)
    """

    def __init__(
        self,
        app: AppConfig,
        backend: str = "cpu",
        settings: WorkerSettings | None = None,
        metrics: MetricsConfig | None = None,
    ) -> None:
        if not app.detectors:
            raise StreamsError("the config names no detectors: add a `detectors:` list to the config file")
        self.app = app
        self.backend = backend
        self.settings = settings or WorkerSettings()
        self.specs_by_topic: dict[str, list[DetectorSpec]] = collections.defaultdict(list)
        for spec in app.detectors:
            self.specs_by_topic[spec.topic].append(spec)
        self.parsers = {spec.name: EventParser(spec) for spec in app.detectors}
        cap = self.settings.series_capacity
        self.detectors = {
            spec.name: Detector(spec.model, backend=backend, capacity=cap) for spec in app.detectors
        }
        self._load_warm_starts(self.settings.warm_start)
        self.store = CheckpointStore(Path(app.data_dir), app.group_id)
        self.sink = ParquetSink(Path(app.data_dir))
        self.alerts = self._make_alerts()
        self.bootstrap: str | None = app.brokers
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._owner: dict[str, tuple[str, int]] = {}
        self._counters = WorkerCounters()
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=20_000)
        self._consumer: Any = None
        self._producer: Any = None
        self._tracker = DeliveryTracker()
        self._dlq: DeadLetterProducer | None = None
        self._broker: Any = None
        self._fault = self._parse_fault(self.settings.fault)
        self._fault_passes: dict[str, int] = collections.Counter()
        self._last_status = 0.0
        self._metrics_config = metrics
        self.metrics = WorkerMetrics(liveness_timeout_s=(metrics or MetricsConfig()).liveness_timeout_s)
        self._metrics_server: Any = None
        self._failed = False
        self._ckpt_pool = ThreadPoolExecutor(1, thread_name_prefix="cutstream-checkpoint")
        self._inflight: collections.deque[tuple[str, int, int, Future[Path]]] = collections.deque()
        self._last_activity = time.monotonic()
        self._last_pass_closed = 0

    # ------------------------------------------------------------------ public API

    def counters(self) -> WorkerCounters:
        """A consistent copy of the counters (safe to call from another thread)."""
        with self._lock:
            snap = WorkerCounters(**self._counters.as_dict())
            if self._latencies:
                lat = np.fromiter(self._latencies, dtype=np.float64)
                snap.latency_ms_p50 = float(np.percentile(lat, 50))
                snap.latency_ms_p99 = float(np.percentile(lat, 99))
        return snap

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; then checkpoint and commit every partition and leave."""
        self._run(stop.is_set)

    def run_until_idle(self, idle_s: float = 3.0, timeout_s: float = 120.0) -> WorkerCounters:
        """Process until no event arrived for ``idle_s`` (after at least one) and the last pass closed
        no window; then checkpoint and stop.

        Meant for tests and scripted runs over a finite stream. Pick ``idle_s`` longer than the
        detectors' ``idle_timeout_ms`` for the last windows to close by the idle rule (which
        then goes on closing windows, empty ones, while the partition stays quiet).
        """
        deadline = time.monotonic() + timeout_s

        def done() -> bool:
            now = time.monotonic()
            if now > deadline:
                return True
            with self._lock:
                seen = self._counters.events_in > 0
            return seen and now - self._last_activity > idle_s and not self._last_pass_closed

        self._run(done)
        return self.counters()

    # ------------------------------------------------------------------ the loop

    def _run(self, should_stop: Callable[[], bool]) -> None:
        from confluent_kafka import Consumer, Producer

        if self.bootstrap is None:
            from streams.broker import EmbeddedBroker

            self._broker = EmbeddedBroker().start()
            self.bootstrap = self._broker.bootstrap
            logger.info("no brokers configured: started the embedded broker bootstrap=%s", self.bootstrap)
            # a fresh in-memory broker has no topics: create the detectors' (producers may start later)
            ensure_topics(self.bootstrap, sorted(self.specs_by_topic), self.settings.embedded_partitions)
        password = self.app.kafka_password.get_secret_value() if self.app.kafka_password else None
        # a producer-wide delivery callback: cheaper than one per message
        self._producer = Producer(
            {
                **producer_config(self.bootstrap, self.app.kafka, password),
                "on_delivery": self._tracker,
                "error_cb": self._on_kafka_error,
            }
        )
        self._dlq = DeadLetterProducer(self._producer, self._tracker)
        self._consumer = Consumer(
            {
                **consumer_config(self.bootstrap, self.app.group_id, self.app.kafka, password),
                "error_cb": self._on_kafka_error,
            }
        )
        cfg = self._metrics_config
        if cfg is not None and cfg.port is not None:
            self._metrics_server = self.metrics.serve(cfg.port, cfg.host)
            logger.info("metrics served url=%s", self._metrics_server.url)
        self.metrics.set_ready(False, "waiting for a partition assignment")
        if self.alerts is not None:
            self.alerts.start()
        topics = sorted(self.specs_by_topic)
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        logger.info(
            "worker started group=%s topics=%s backend=%s bootstrap=%s",
            self.app.group_id,
            ",".join(topics),
            self.backend,
            self.bootstrap,
        )
        clean = False
        try:
            while not should_stop():
                self._step()
            self._checkpoint_all()
            clean = True
        finally:
            self._shutdown(clean)

    def _step(self) -> None:
        s = self.settings
        # a short wait while results are in flight, so that delivery reports are served promptly
        timeout = 0.01 if len(self._producer) else s.poll_timeout_s
        msgs = self._consumer.consume(s.max_batch, timeout)
        t0 = time.monotonic()
        self._producer.poll(0)  # serve the delivery reports of the last pass before the next one
        if msgs:
            self._ingest(msgs)
        self._last_pass_closed = self._advance(t0)
        self._producer.poll(0)
        self._maybe_flush()
        self._drain_checkpoints(block=False)
        self.metrics.tick()
        self._report()
        if msgs:
            self._last_activity = time.monotonic()

    def _ingest(self, msgs: list[Any]) -> None:
        by_tp: dict[tuple[str, int], list[Any]] = {}
        for m in msgs:
            if m.error() is not None:
                if m.error().fatal():
                    raise StreamsError(f"fatal Kafka error: {m.error()}")
                logger.warning("consume error error=%s", m.error())
                continue
            by_tp.setdefault((m.topic(), m.partition()), []).append(m)
        wall = _now_ms()
        n_in = 0
        rejects: collections.Counter[str] = collections.Counter()
        for key, ms in by_tp.items():
            part = self._parts.get(key)
            if part is None:
                logger.warning("message from an unassigned partition topic=%s partition=%d", *key)
                continue
            first = ms[0].offset()
            if part.next_offset is None:
                self._start_fresh(part, first)
            elif first < part.next_offset:  # a redelivery after a seek: skip what the state has
                ms = [m for m in ms if m.offset() >= part.next_offset]
                if not ms:
                    continue
            values = [m.value() for m in ms]
            for spec in self.specs_by_topic[part.topic]:
                parsed = self.parsers[spec.name].parse(values)
                bad = list(parsed.rejects)
                bad.extend(self._window_add(part.windows[spec.name], parsed, wall))
                for i, reason in bad:
                    m = ms[i]
                    self._dlq_send(m, reason, spec.name)
                    rejects[reason] += 1
            part.next_offset = ms[-1].offset() + 1
            part.events_since_checkpoint += len(ms)
            part.dirty = True
            n_in += len(ms)
        with self._lock:
            self._counters.events_in += n_in
            for reason, k in rejects.items():
                self._counters.rejects[reason] = self._counters.rejects.get(reason, 0) + k
        self.metrics.events_in(n_in)
        for reason, k in rejects.items():
            self.metrics.dead_lettered(reason, k)

    @staticmethod
    def _window_add(windows: Any, parsed: Any, wall_ms: int) -> list[tuple[int, str]]:
        try:
            out = windows.add(parsed, wall_ms)
        except TypeError:
            out = windows.add(parsed)
        return list(out or [])

    def _dlq_send(self, m: Any, reason: str, detector: str) -> None:
        if self._dlq is None:
            raise StreamsError("the worker is not running")
        self._dlq.send(m.topic(), m.partition(), m.offset(), m.key(), m.value(), reason, detector)

    def _advance(self, t0: float) -> int:
        """Close due windows in every partition and score them, one Detector step per detector."""
        wall = _now_ms()
        per_spec: dict[str, list[tuple[_Partition, Any]]] = collections.defaultdict(list)
        for part in self._parts.values():
            for name, ws in part.windows.items():
                closed = ws.advance(wall)
                if len(closed):
                    per_spec[name].append((part, closed))
                    part.dirty = True
        total = 0
        for name, items in per_spec.items():
            items = [(part, self._finite(part, closed)) for part, closed in items]
            items = [(part, closed) for part, closed in items if len(closed)]
            if items:
                total += self._score(name, items, t0)
        return total

    def _finite(self, part: _Partition, closed: Any) -> Any:
        """Drop windows whose aggregate is not finite (a sum that overflowed): they cannot be scored.

        Each event was finite (the parser checks); only an aggregate can overflow. Such windows get
        no result; they are counted (``rejects["non_finite_window"]``) and logged, and the worker
        goes on instead of failing on the same input after every restart.
        """
        ok = np.isfinite(np.asarray(closed.value, dtype=np.float64))
        if ok.all():
            return closed
        n_bad = int((~ok).sum())
        logger.warning(
            "windows with a non-finite aggregate skipped topic=%s partition=%d count=%d",
            part.topic,
            part.partition,
            n_bad,
        )
        with self._lock:
            self._counters.rejects["non_finite_window"] = (
                self._counters.rejects.get("non_finite_window", 0) + n_bad
            )
        return dataclasses.replace(
            closed,
            series=closed.series[ok],
            window_start_ms=closed.window_start_ms[ok],
            window_end_ms=closed.window_end_ms[ok],
            value=closed.value[ok],
            missing=closed.missing[ok],
        )

    def _score(self, name: str, items: list[tuple[_Partition, Any]], t0: float) -> int:
        """Score the windows that closed in this pass (all partitions) in one step; emit the results."""
        closed = _Concat([c for _, c in items])
        keys = closed.timeseries_id
        offset = 0
        for part, c in items:
            n = len(c)
            owned = part.series.setdefault(name, {})
            me = (part.topic, part.partition)
            for k in dict.fromkeys(keys[offset : offset + n]):
                if k not in owned:
                    owner = self._owner.setdefault(k, me)
                    if owner != me:
                        self._series_split(k, owner, me)
                    owned[k] = None
            offset += n
        scores = self.detectors[name].process_many(keys, closed.value, closed.window_start_ms, closed.missing)
        cols = ResultColumns.of(name, closed, scores)
        self._produce_results(cols, t0)  # first: the results topic is the latency-critical sink
        table = cols.table()
        offset = 0
        for part, c in items:
            n = len(c)
            part.pending.append(table.slice(offset, n))
            offset += n
        with self._lock:
            self._counters.windows_closed += len(keys)
        return len(keys)

    def _series_split(self, tsid: str, owner: tuple[str, int], me: tuple[str, int]) -> None:
        with self._lock:
            self._counters.series_split += 1
        logger.warning(
            "series seen on two partitions (input not keyed by series?) series=%s first=%s-%d now=%s-%d",
            tsid,
            *owner,
            *me,
        )

    def _produce_results(self, cols: ResultColumns, t0: float) -> None:
        """Send the records to the results topic (key = timeseriesId); delivery is checked at flush."""
        topic = self.app.results_topic
        keys = cols.timeseries_id
        payloads = cols.json()
        produce = self._producer.produce
        n = len(keys)
        i = 0
        try:
            for i in range(n - 1):
                produce(topic, payloads[i], keys[i])
            i = n - 1
            produce(topic, payloads[i], keys[i], on_delivery=self._latency_cb(t0, time.monotonic(), n))
        except BufferError:
            self._produce_slowly(topic, keys[i:], payloads[i:], t0)
        self._producer.poll(0)
        self.metrics.scored(n)
        with self._lock:
            self._counters.results_produced += len(keys)

    def _produce_slowly(self, topic: str, keys: Sequence[str], payloads: Sequence[bytes], t0: float) -> None:
        """The local queue is full: produce the rest, letting deliveries drain when it fills."""
        for i, (k, v) in enumerate(zip(keys, payloads, strict=True)):
            cb = self._latency_cb(t0, time.monotonic(), len(keys)) if i == len(keys) - 1 else None
            while True:
                try:
                    if cb is None:
                        self._producer.produce(topic, v, k)
                    else:
                        self._producer.produce(topic, v, k, on_delivery=cb)
                    break
                except BufferError:
                    self._producer.poll(0.1)

    def _latency_cb(self, t0: float, enqueued: float, n: int) -> Callable[[Any, Any], None]:
        """Delivery report of a step's last record: window close (t0) → acknowledged by the broker.

        ``msg.latency()`` is librdkafka's produce → acknowledgement time, so the figure does not
        depend on when the loop gets round to serving delivery reports.
        """

        def cb(err: Any, msg: Any) -> None:
            track = self._tracker
            track(err, msg)
            if err is None:
                acked = msg.latency()
                total = enqueued - t0 + (acked if acked is not None else time.monotonic() - enqueued)
                with self._lock:
                    self._latencies.append(total * 1000.0)
                self.metrics.window_closed(total, n)

        return cb

    # ------------------------------------------------------------------ flush, checkpoint, commit

    def _maybe_flush(self) -> None:
        """Write due Parquet files; start at most one due checkpoint per pass (spreads their cost)."""
        s = self.settings
        now = time.monotonic()
        due: list[tuple[float, _Partition]] = []
        for part in self._parts.values():
            overdue = now - part.last_checkpoint_at - s.checkpoint_interval_s
            by_events = (
                bool(s.checkpoint_every_events) and part.events_since_checkpoint >= s.checkpoint_every_events
            )
            if part.dirty and (overdue >= 0 or by_events):
                due.append((overdue if not by_events else float("inf"), part))
            elif part.pending and now - part.last_parquet_at >= s.parquet_interval_s:
                self._write_parquet(part)
        if due:
            self._checkpoint(max(due, key=lambda d: d[0])[1])

    def _write_parquet(self, part: _Partition) -> None:
        """Write the partition's pending results to Parquet, named after the offsets they cover.

        Results of windows closed by the idle timeout with no input since the last file cover no
        new offset. They go to the partition's *idle source* (``<topic>-<partition>.idle``) in the
        file ``[P, P]``, P = the partition's next offset; later such results at the same P rewrite
        that file with all of them, and the next checkpoint at P carries them (a restore from P
        deletes the idle files from P on, like the input files).
        """
        part.last_parquet_at = time.monotonic()
        if not part.pending or part.next_offset is None or part.parquet_offset is None:
            return
        first = part.parquet_offset
        new = part.pending
        if part.next_offset > first:
            source, last, written = part.source, part.next_offset - 1, new
        else:
            source, last, written = part.idle_source, first, part.idle_written + new
        table = pa.concat_tables(written) if len(written) > 1 else written[0]
        paths = self.sink.write(table, source, first, last)
        if self.alerts is not None:
            self.alerts.observe(pa.concat_tables(new))
        rows = sum(t.num_rows for t in new)
        with self._lock:
            self._counters.results_written += rows
            self._counters.parquet_files += len(paths)
        if source == part.source:
            part.idle_written = []
            part.parquet_offset = part.next_offset
        else:
            part.idle_written = written
        part.pending = []
        self._maybe_fault("after-parquet")

    def _checkpoint(self, part: _Partition, wait: bool = False) -> None:
        """Parquet, then producer flush, then the checkpoint file, then the offset commit.

        The state is captured here (``to_state`` returns copies); encoding, writing and fsyncing
        the file happen on the checkpoint thread, and the commit follows in this thread once the
        file is durable (:meth:`_drain_checkpoints`), so a large checkpoint does not stall scoring.
        """
        part.last_checkpoint_at = time.monotonic()
        if part.next_offset is None:
            return
        self._write_parquet(part)
        if not self._flush_producer():
            return  # retried at the next checkpoint interval; the last checkpoint stays the truth
        ckpt = Checkpoint(
            topic=part.topic,
            partition=part.partition,
            next_offset=part.next_offset,
            windows={name: ws.to_state() for name, ws in part.windows.items()},
            detectors={name: self.detectors[name].to_state(list(keys)) for name, keys in part.series.items()},
            series={name: list(keys) for name, keys in part.series.items()},
            # the rows of the idle file at next_offset, which a restore from this checkpoint deletes
            pending_results=_table_to_ipc(part.idle_written),
            written_at_ms=_now_ms(),
        )
        self._inflight.append(
            (ckpt.topic, ckpt.partition, ckpt.next_offset, self._ckpt_pool.submit(self.store.save, ckpt))
        )
        part.checkpoint_offset = part.next_offset
        part.events_since_checkpoint = 0
        part.dirty = False
        if wait:
            self._drain_checkpoints(block=True)

    def _drain_checkpoints(self, block: bool) -> None:
        """Commit the offsets of the checkpoints that are durable (in order; all of them if ``block``)."""
        while self._inflight:
            topic, partition, offset, fut = self._inflight[0]
            if not block and not fut.done():
                return
            fut.result()  # a failed write raises here: the worker stops before committing past it
            self._inflight.popleft()
            with self._lock:
                self._counters.checkpoints += 1
            self._maybe_fault("after-checkpoint")
            self._commit(topic, partition, offset)

    def _commit(self, topic: str, partition: int, offset: int) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self._consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
        except KafkaException as exc:
            # the checkpoint is the truth; a failed commit only delays what lag monitors see
            logger.warning(
                "commit failed topic=%s partition=%d offset=%d error=%s", topic, partition, offset, exc
            )
            with self._lock:
                self._counters.commit_failures += 1
            return
        with self._lock:
            self._counters.commits += 1

    def _flush_producer(self, timeout_s: float = 30.0) -> bool:
        """Wait for the results and dead letters in flight; False if some are still undelivered.

        Undelivered messages stay queued in librdkafka, which retries them until
        ``message.timeout.ms``; the caller then skips the checkpoint (nothing is committed past
        them) and tries again later, so a broker outage delays checkpoints instead of stopping the
        worker. A delivery that failed for good still raises.
        """
        left = self._producer.flush(timeout_s)
        self._tracker.raise_if_failed("result/dead-letter")
        if left:
            logger.warning(
                "results not delivered yet, checkpoint postponed undelivered=%d waited_s=%.0f "
                "(is the broker reachable?)",
                left,
                timeout_s,
            )
            with self._lock:
                self._counters.checkpoints_postponed += 1
            return False
        return True

    def _checkpoint_all(self) -> None:
        for part in list(self._parts.values()):
            if part.dirty or part.pending:
                self._checkpoint(part)
        self._drain_checkpoints(block=True)

    # ------------------------------------------------------------------ assignment

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            part = self._restore(tp.topic, tp.partition)
            self._parts[(tp.topic, tp.partition)] = part
            if part.next_offset is not None:
                tp.offset = part.next_offset
        consumer.assign(partitions)
        self._set_assigned()
        logger.info(
            "partitions assigned group=%s partitions=%s",
            self.app.group_id,
            ",".join(f"{tp.topic}-{tp.partition}@{tp.offset}" for tp in partitions),
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._failed:  # the state may be half-updated: leave without writing anything
            self._parts.clear()
            return
        for tp in partitions:
            part = self._parts.get((tp.topic, tp.partition))
            if part is None:
                continue
            if part.dirty or part.pending:
                self._checkpoint(part)
        self._drain_checkpoints(block=True)  # commit while the partitions are still ours
        for tp in partitions:
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None:
                self._drop(part)
        self._set_assigned()
        logger.info(
            "partitions revoked group=%s partitions=%s",
            self.app.group_id,
            ",".join(f"{tp.topic}-{tp.partition}" for tp in partitions),
        )

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # another worker may own them already: drop the state without writing anything
        for tp in partitions:
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None:
                self._drop(part)
        self._set_assigned()
        logger.warning(
            "partitions lost group=%s partitions=%s",
            self.app.group_id,
            ",".join(f"{tp.topic}-{tp.partition}" for tp in partitions),
        )

    def _drop(self, part: _Partition) -> None:
        self._parts.pop((part.topic, part.partition), None)
        self.metrics.forget_partitions([(part.topic, part.partition)])
        me = (part.topic, part.partition)
        for name, keys in part.series.items():
            self.detectors[name].evict(list(keys))
            for k in keys:
                if self._owner.get(k) == me:
                    del self._owner[k]

    def _set_assigned(self) -> None:
        with self._lock:
            self._counters.assigned = sorted(f"{t}-{p}" for t, p in self._parts)
        self.metrics.set_ready(bool(self._parts), "no partitions assigned")
        self._report(force=True)

    def _on_kafka_error(self, err: Any) -> None:
        """librdkafka's error callback (transport errors, all brokers down, ...): count and log."""
        kind = str(err.name()).lower().lstrip("_")
        self.metrics.broker_error(kind)
        if err.fatal():
            logger.error("fatal Kafka client error kind=%s error=%s", kind, err)
        else:
            logger.warning("Kafka client error kind=%s error=%s", kind, err)

    def _new_partition(self, topic: str, partition: int) -> _Partition:
        return _Partition(
            topic=topic,
            partition=partition,
            windows={
                spec.name: WindowState(spec, self.parsers[spec.name].registry)
                for spec in self.specs_by_topic[topic]
            },
            series={spec.name: {} for spec in self.specs_by_topic[topic]},
        )

    def _restore(self, topic: str, partition: int) -> _Partition:
        """Load the partition's checkpoint (if any) and remove Parquet files written after it."""
        part = self._new_partition(topic, partition)
        ckpt = self.store.load(topic, partition)
        if ckpt is None:
            return part  # the start offset is known with the first message (see _start_fresh)
        specs = {spec.name: spec for spec in self.specs_by_topic[topic]}
        for name, state in ckpt.windows.items():
            if name in specs:
                part.windows[name] = _restore_windows(specs[name], state, self.parsers[name].registry)
        me = (topic, partition)
        for name, state in ckpt.detectors.items():
            if name in specs:
                self.detectors[name].from_state(state)
                part.series[name] = dict.fromkeys(ckpt.series.get(name, ()))
                for k in part.series[name]:
                    self._owner.setdefault(k, me)
        part.pending = _ipc_to_tables(ckpt.pending_results)
        part.next_offset = part.parquet_offset = part.checkpoint_offset = ckpt.next_offset
        removed = self._delete_after(part, ckpt.next_offset)
        with self._lock:
            self._counters.restores += 1
        logger.info(
            "partition restored topic=%s partition=%d next_offset=%d series=%d parquet_removed=%s",
            topic,
            partition,
            ckpt.next_offset,
            sum(len(v) for v in part.series.values()),
            removed,
        )
        return part

    def _delete_after(self, part: _Partition, offset: int) -> int:
        """Remove the partition's Parquet files from ``offset`` on (a crashed run's; redone now)."""
        return len(self.sink.delete_after(part.source, offset)) + len(
            self.sink.delete_after(part.idle_source, offset)
        )

    def _start_fresh(self, part: _Partition, first_offset: int) -> None:
        """A partition without a checkpoint starts at its first message (committed offset or earliest)."""
        removed = self._delete_after(part, first_offset)
        part.next_offset = part.parquet_offset = part.checkpoint_offset = first_offset
        logger.info(
            "partition started without checkpoint topic=%s partition=%d offset=%d parquet_removed=%s",
            part.topic,
            part.partition,
            first_offset,
            removed,
        )

    # ------------------------------------------------------------------ misc

    def _load_warm_starts(self, paths: Sequence[str]) -> None:
        """Load models saved by ``cutstream backfill --warm-start-out`` (each file names its detector).

        Warm models belong to no partition until their series' first window closes; a partition
        restored from a checkpoint replaces them with its own (newer) state.
        """
        from streams.backfill import load_warm_start
        from streams.checkpoint import CheckpointError, loads

        specs = {spec.name: spec for spec in self.app.detectors}
        for path in paths:
            try:
                ckpt = loads(Path(path).read_bytes())
            except (OSError, CheckpointError) as exc:
                raise StreamsError(f"cannot read the warm-start file {path}: {exc}") from exc
            name = ckpt.topic.removeprefix("warm-start:")
            if name not in specs:
                raise StreamsError(
                    f"{path} holds models of detector {name!r}, which the config does not name"
                )
            keys = self.detectors[name].from_state(load_warm_start(Path(path), specs[name]), warm_start=True)
            logger.info("warm start loaded detector=%s series=%d file=%s", name, len(keys), path)

    def _make_alerts(self) -> Any:
        hooks = {s.name: s.alerts for s in self.app.detectors if s.alerts.webhooks or s.alerts.emails}
        if not hooks:
            return None
        from sinks.alerts import AlertService

        return AlertService(hooks, Path(self.app.data_dir) / "alerts", self.app.alert_delivery)

    @staticmethod
    def _parse_fault(fault: str | None) -> tuple[str, int] | None:
        if not fault:
            return None
        point, _, n = fault.partition(":")
        if point not in ("after-parquet", "after-checkpoint"):
            raise StreamsError(f"unknown fault point {point!r}")
        return point, int(n or 1)

    def _maybe_fault(self, point: str) -> None:
        if self._fault is None or self._fault[0] != point:
            return
        self._fault_passes[point] += 1
        if self._fault_passes[point] >= self._fault[1]:
            logger.warning("fault injection: SIGKILL at point=%s pass=%d", point, self._fault_passes[point])
            os.kill(os.getpid(), signal.SIGKILL)

    def _report(self, force: bool = False) -> None:
        """About once a second: lag, series and alert gauges, and the status file."""
        now = time.monotonic()
        if not force and now - self._last_status < 1.0:
            return
        self._last_status = now
        self._update_gauges()
        path = self.settings.status_file
        if path is None:
            return
        data = {
            "pid": os.getpid(),
            "group": self.app.group_id,
            "time_ms": _now_ms(),
            **self.counters().as_dict(),
        }
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    def _update_gauges(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        total: int | None = None
        if self._consumer is not None:
            for part in self._parts.values():
                if part.next_offset is None:
                    continue
                try:  # the fetch-cached high watermark: never a ListOffsets round trip
                    _low, high = self._consumer.get_watermark_offsets(
                        TopicPartition(part.topic, part.partition), cached=True
                    )
                except KafkaException:
                    continue
                if high is None or high < 0:
                    continue
                lag = max(int(high) - part.next_offset, 0)
                self.metrics.lag(part.partition, lag, part.topic)
                total = lag + (total or 0)
        with self._lock:
            self._counters.lag_messages = total
        n_series = sum(len(d) for d in self.detectors.values())
        self.metrics.series_tracked(n_series)
        self.metrics.model_bytes(sum(len(d) * d.bytes_per_series for d in self.detectors.values()))
        if self.alerts is not None:
            self.metrics.alerts(
                self.alerts.sent_total,
                self.alerts.pending_count(),
                self.alerts.dead_lettered_total,
                self.alerts.dead_letter_count(),
            )

    def _shutdown(self, clean: bool) -> None:
        self._failed = not clean
        try:
            if self._consumer is not None:
                if clean:
                    self._parts.clear()  # already checkpointed: the revoke on close has nothing to do
                self._consumer.close()
                self._consumer = None
            self._ckpt_pool.shutdown(wait=True)
            if self._producer is not None and clean:
                self._producer.flush(10.0)
            self._report(force=True)
        finally:
            if self.alerts is not None:
                self.alerts.stop()
            self.metrics.set_ready(False, "stopped")
            if self._metrics_server is not None:
                self._metrics_server.close()
            if self._broker is not None:
                self._broker.stop()
            logger.info("worker stopped group=%s clean=%s", self.app.group_id, clean)


class _Concat:
    """Several ClosedWindows viewed as one (only what build_results reads)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self._parts = parts
        self.timeseries_id = [k for c in parts for k in c.timeseries_id]
        self.measure = [m for c in parts for m in c.measure]
        self.dimension_lists = [d for c in parts for d in c.dimension_lists]
        self.window_start_ms = np.concatenate([np.asarray(c.window_start_ms, np.int64) for c in parts])
        self.window_end_ms = np.concatenate([np.asarray(c.window_end_ms, np.int64) for c in parts])
        self.value = np.concatenate([np.asarray(c.value, np.float64) for c in parts])
        self.missing = np.concatenate([np.asarray(c.missing, bool) for c in parts])

    def __len__(self) -> int:
        return len(self.timeseries_id)

    def arrow_columns(self) -> tuple[pa.Array, pa.Array] | None:
        """timeseriesId and dimensionList as Arrow arrays, taken from the registries' cached copies."""
        if not all(hasattr(c, "timeseries_id_array") for c in self._parts):
            return None
        return (
            pa.concat_arrays([c.timeseries_id_array() for c in self._parts]),
            pa.concat_arrays([c.dimension_list_array() for c in self._parts]),
        )


def _restore_windows(spec: DetectorSpec, state: dict[str, Any], registry: Any) -> WindowState:
    """Rebuild a partition's windows; its idle clock restarts now, not at the checkpoint's time.

    Otherwise a restart that takes longer than ``idle_timeout_ms`` would close the restored
    windows at once (by the idle rule), before the events that follow the checkpoint arrive.
    """
    state = {**state, "last_activity_wall_ms": None, "watermark_at_activity": None}
    return WindowState.from_state(spec, state, registry)
