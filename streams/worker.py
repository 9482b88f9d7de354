"""The detector worker: consume, hand batches to the pipelines, drive checkpoints and rebalances.

One worker process joins the consumer group ``group_id`` and subscribes to the topics of its
detectors; Kafka splits the partitions among the workers of the group, on one machine or many.
The worker is a thin driver over three parts:

- :class:`streams.pipeline.DetectorPipeline`, one per detector: decode → validate → window →
  score → result batch, for every partition the worker holds;
- the sinks (``sinks.base.Sink``): the results topic, Parquet and alerts take every result batch;
- :class:`streams.coordinator.CheckpointCoordinator`: the checkpoint/commit protocol (sinks
  flushed, state captured and written, offsets committed; restore on assignment).

What it did goes out through one sensor interface (``streams.sensors``): counters, Prometheus
metrics and the status file are sensors.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sinks.base import Partition, Sink
from sinks.kafka import DeliveryTracker
from sinks.parquet import ParquetPartitionSink, ParquetSink
from sinks.results_topic import ResultsTopicSink
from sinks.results_txn import TransactionalResultsSink
from streams.checkpoint import CheckpointError, CheckpointStore, load_warm_start, warm_start_detector
from streams.config import WorkerApp, WorkerSettings
from streams.coordinator import CheckpointCoordinator
from streams.errors import StreamsError
from streams.kafka import (
    DeadLetterProducer,
    EndOffsets,
    broker_features,
    consumer_config,
    consumer_lag,
    ensure_topics,
    incremental_rebalance,
    offsets_for_time,
    producer_config,
    transactional_id,
    transactional_producer_config,
)
from streams.metrics import MetricsConfig, WorkerMetrics
from streams.park import SUFFIX as PARK_SUFFIX
from streams.park import ModelPark
from streams.pipeline import DetectorPipeline, model_moves
from streams.sensors import (
    CounterSensor,
    Gauges,
    PrometheusSensor,
    Sensor,
    SensorDelegate,
    StatusFileSensor,
    WorkerCounters,
)

__all__ = ["Worker", "WorkerCounters"]

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Worker:
    """A detector worker in a consumer group (see the module docstring).

    Example:
        >>> stop = threading.Event()                      # doctest: +SKIP
        >>> Worker(load_config(Path("detectors.yaml"))).run(stop)

    Args:
        app: the settings (brokers, data directory, group, detectors, ...).
        backend: the detectors' array backend.
        settings: batching, flush and checkpoint cadence, warm starts, the status file.
        metrics: where to serve ``/metrics``, ``/healthz`` and ``/readyz`` (no server when None).
        sensors: more sensors to tell what the worker does (e.g. ``streams.testing.KillAt``).
    """

    def __init__(
        self,
        app: WorkerApp,
        backend: str = "cpu",
        settings: WorkerSettings | None = None,
        metrics: MetricsConfig | None = None,
        sensors: Sequence[Sensor] = (),
    ) -> None:
        if not app.detectors:
            raise StreamsError("the config names no detectors: add a `detectors:` list to the config file")
        self.app = app
        self.backend = backend
        self.settings = s = settings or WorkerSettings()
        self._store = store = CheckpointStore(Path(app.data_dir), app.group_id)
        self.pipelines: dict[str, DetectorPipeline[Partition]] = {
            spec.name: DetectorPipeline(
                spec,
                backend=backend,
                capacity=s.series_capacity,
                park=ModelPark(spec.name, lambda tp: store.path(*tp).with_suffix(PARK_SUFFIX)),
            )
            for spec in app.detectors
        }
        self.by_topic: dict[str, list[DetectorPipeline[Partition]]] = collections.defaultdict(list)
        for spec in app.detectors:
            self.by_topic[spec.topic].append(self.pipelines[spec.name])
        self._load_warm_starts(s.warm_start)
        self._metrics_config = metrics or MetricsConfig()
        self.metrics = WorkerMetrics(liveness_timeout_s=self._metrics_config.liveness_timeout_s)
        self._counters = CounterSensor()
        status = [StatusFileSensor(s.status_file, self._counters, app.group_id)] if s.status_file else []
        self.sensor = SensorDelegate([self._counters, PrometheusSensor(self.metrics), *status, *sensors])
        self.alerts = self._make_alerts()
        self.bootstrap: str | None = app.brokers
        self.coordinator: CheckpointCoordinator | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._dlq: DeadLetterProducer | None = None
        self._broker: Any = None
        self._end_offsets: EndOffsets | None = None
        self._txn: TransactionalResultsSink | None = None  # the results topic through transactions
        self._incremental = False  # rebalances add/remove partitions (KIP-848, cooperative-sticky)
        self._metrics_server: Any = None
        self._failed = False
        self._last_report = 0.0
        self._last_activity = time.monotonic()
        self._last_pass_closed = 0

    # ------------------------------------------------------------------ public API

    def counters(self) -> WorkerCounters:
        """A consistent copy of the counters (safe to call from another thread)."""
        return self._counters.snapshot()

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
            seen = self._counters.events_in > 0
            return seen and now - self._last_activity > idle_s and not self._last_pass_closed

        self._run(done)
        return self.counters()

    # ------------------------------------------------------------------ the loop

    def _run(self, should_stop: Callable[[], bool]) -> None:
        coordinator = self._start()
        clean = False
        try:
            while not should_stop():
                self._step(coordinator)
            coordinator.checkpoint_all()
            clean = True
        finally:
            self._shutdown(clean)

    def _step(self, coordinator: CheckpointCoordinator) -> None:
        s = self.settings
        # a short wait while results are in flight, so that delivery reports are served promptly
        msgs = self._consumer.consume(s.max_batch, 0.01 if len(self._producer) else s.poll_timeout_s)
        t0 = time.monotonic()
        self._producer.poll(0)  # serve the delivery reports of the last pass before the next one
        if msgs:
            self._ingest(coordinator, msgs)
        self._last_pass_closed = self._score(coordinator, t0)
        self._producer.poll(0)
        coordinator.tick(time.monotonic())
        self.sensor.on_tick()
        self._report()
        if msgs:
            self._last_activity = time.monotonic()

    def _ingest(self, coordinator: CheckpointCoordinator, msgs: list[Any]) -> None:
        """Each partition's messages through its topic's pipelines; rejects to the dead-letter topic."""
        wall = _now_ms()
        for tp, ms in _by_partition(msgs).items():
            progress = coordinator.progress.get(tp)
            if progress is None:
                logger.warning("message from an unassigned partition topic=%s partition=%d", *tp)
                continue
            if progress.next_offset is None:
                coordinator.start(tp, ms[0].offset())
            elif ms[0].offset() < progress.next_offset:  # a redelivery after a seek: skip what we have
                ms = [m for m in ms if m.offset() >= progress.next_offset]
                if not ms:
                    continue
            values = [m.value() for m in ms]
            for pipe in self.by_topic[tp[0]]:
                self._dead_letter(ms, pipe.add(tp, values, wall), pipe.name)
            coordinator.consumed(tp, ms[-1].offset() + 1, len(ms))
            self.sensor.on_consumed(tp, len(ms))

    def _dead_letter(self, msgs: list[Any], rejects: list[tuple[int, str]], detector: str) -> None:
        if not rejects:
            return
        if self._dlq is None:
            raise StreamsError("the worker is not running")
        by_reason: collections.Counter[str] = collections.Counter()
        for i, reason in rejects:
            m = msgs[i]
            self._dlq.send(m.topic(), m.partition(), m.offset(), m.key(), m.value(), reason, detector)
            by_reason[reason] += 1
        for reason, n in by_reason.items():
            self.sensor.on_dead_lettered(reason, n)

    def _score(self, coordinator: CheckpointCoordinator, t0: float) -> int:
        """Close due windows in every partition; one detector step per detector; results to the sinks."""
        wall = _now_ms()
        total = 0
        for pipe in self.pipelines.values():
            closed = pipe.close([tp for tp in pipe.partitions() if tp in coordinator.progress], wall)
            if closed.non_finite:
                self.sensor.on_skipped("non_finite_window", closed.non_finite)
            for tp, _ in closed.parts:
                coordinator.changed(tp)
            scored = pipe.score(closed, closed_at=t0)
            if scored is None:
                continue
            if scored.series_split:
                self.sensor.on_series_split(scored.series_split)
            parts = list(scored.by_partition())
            for sink in coordinator.sinks:  # sink by sink: the results topic (latency) gets the step first
                for tp, batch in parts:
                    sink.add(tp, batch)
            self.sensor.on_scored(len(scored.results))
            total += len(scored.results)
        return total

    # ------------------------------------------------------------------ start and stop

    def _start(self) -> CheckpointCoordinator:
        from confluent_kafka import Consumer, Producer

        if self.bootstrap is None:
            from streams.broker import EmbeddedBroker

            self._broker = EmbeddedBroker().start()
            self.bootstrap = self._broker.bootstrap
            logger.info("no brokers configured: started the embedded broker bootstrap=%s", self.bootstrap)
            # a fresh in-memory broker has no topics: create the detectors' (producers may start later)
            ensure_topics(self.bootstrap, sorted(self.by_topic), self.settings.embedded_partitions)
        app = self.app
        password = app.kafka_password.get_secret_value() if app.kafka_password else None
        features = broker_features(
            str(self.bootstrap), self.app.kafka, password, self.settings, embedded=self._broker is not None
        )
        self._end_offsets = features.end_offsets
        tracker = DeliveryTracker()
        # a producer-wide delivery callback: cheaper than one per message
        self._producer = Producer(
            {
                **producer_config(self.bootstrap, app.kafka, password),
                "on_delivery": tracker,
                "error_cb": self._on_kafka_error,
            }
        )
        self._dlq = DeadLetterProducer(self._producer, tracker)
        consumer_cfg = consumer_config(self.bootstrap, app.group_id, app.kafka, password)
        self._incremental = incremental_rebalance(consumer_cfg)
        self._consumer = Consumer({**consumer_cfg, "error_cb": self._on_kafka_error})
        sinks = self._sinks(tracker, features.transactions, password)
        self.coordinator = CheckpointCoordinator(
            self._store,
            self.by_topic,
            sinks,
            self._txn.commit if self._txn is not None else self._commit,
            self.sensor,
            self.settings,
        )
        cfg = self._metrics_config
        if cfg.port is not None:
            self._metrics_server = self.metrics.serve(cfg.port, cfg.host)
            logger.info("metrics served url=%s", self._metrics_server.url)
        self.metrics.set_ready(False, "waiting for a partition assignment")
        topics = sorted(self.by_topic)
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        logger.info(
            "worker started group=%s topics=%s backend=%s bootstrap=%s",
            app.group_id,
            ",".join(topics),
            self.backend,
            self.bootstrap,
        )
        return self.coordinator

    def _sinks(self, tracker: DeliveryTracker, transactions: bool, password: str | None) -> list[Sink]:
        """The results topic (first: latency), Parquet, then alerts (observed after each Parquet write).

        With ``transactions`` the results topic sink has a transactional producer per input
        partition and commits the offsets itself (``sinks.results_txn``); dead letters stay on the
        shared idempotent producer (at-least-once).
        """
        interval = self.settings.parquet_interval_s
        parquet = ParquetPartitionSink(ParquetSink(Path(self.app.data_dir)), interval, self.sensor.on_written)
        from confluent_kafka import Producer

        results: Sink
        if transactions:
            app, bootstrap, every = self.app, str(self.bootstrap), self.settings.checkpoint_interval_s
            self._txn = results = TransactionalResultsSink(
                lambda tp: Producer(
                    {
                        **transactional_producer_config(
                            bootstrap, app.kafka, password, transactional_id(app.group_id, *tp), every
                        ),
                        "error_cb": self._on_kafka_error,
                    }
                ),
                app.results_topic,
                self._committed,
                lambda: self._consumer.consumer_group_metadata(),
                self.sensor.on_acked,
            )
        else:
            results = ResultsTopicSink(self._producer, self.app.results_topic, tracker, self.sensor.on_acked)
        sinks: list[Sink] = [results, parquet]
        if self.alerts is not None:
            from sinks.alerts.sink import AlertSink

            self.alerts.start()
            sinks.append(AlertSink(self.alerts, interval))
        return sinks

    def _shutdown(self, clean: bool) -> None:
        self._failed = not clean
        try:
            if self._consumer is not None:
                if clean and self.coordinator is not None:
                    self.coordinator.progress.clear()  # checkpointed: the revoke on close has nothing to do
                self._consumer.close()
                self._consumer = None
            if self.coordinator is not None:
                self.coordinator.close()
            if self._txn is not None:  # open transactions are empty after a clean stop; else aborted
                self._txn.close()
            if self._producer is not None and clean:
                self._producer.flush(10.0)
                # closed, not left to the garbage collector: an open producer keeps reconnecting to a
                # broker that stops next (the demo's), printing librdkafka's connection-refused lines
                self._producer.close()
                self._producer = None
            self._report(force=True)
        finally:
            if self.alerts is not None:
                self.alerts.stop()
            self.sensor.on_stopped()
            if self._metrics_server is not None:
                self._metrics_server.close()
            if self._broker is not None:
                self._broker.stop()
            logger.info("worker stopped group=%s clean=%s", self.app.group_id, clean)

    # ------------------------------------------------------------------ rebalances and commits

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        if self.coordinator is None:
            raise StreamsError("partitions assigned to a worker that is not running")
        if self._txn is not None:  # every new partition's transactional producer, in parallel
            self._txn.prepare([(tp.topic, tp.partition) for tp in partitions])
        fresh = []
        for tp in partitions:
            offset = self.coordinator.assign((tp.topic, tp.partition))
            if offset is not None:
                tp.offset = offset
            else:
                fresh.append(tp)
        start_ms = self.settings.start_from_ms
        if start_ms is not None and fresh:  # a checkpoint wins over --from: its state covers its offset
            found = offsets_for_time(consumer, [(tp.topic, tp.partition) for tp in fresh], start_ms)
            for tp in fresh:
                tp.offset = found[(tp.topic, tp.partition)]
        if self._incremental:  # KIP-848 / cooperative: `partitions` are the ones added
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._assignment_changed()
        logger.info(
            "partitions assigned group=%s partitions=%s",
            self.app.group_id,
            ",".join(f"{tp.topic}-{tp.partition}@{tp.offset}" for tp in partitions),
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        coordinator = self.coordinator
        if coordinator is None or self._failed:  # the state may be half-updated: write nothing
            if coordinator is not None:
                coordinator.progress.clear()
            return
        tps = [(tp.topic, tp.partition) for tp in partitions]
        coordinator.checkpoint_all(tps)  # and commit, while the partitions are still ours
        for tp in tps:
            coordinator.drop(tp)
        self._assignment_changed()
        logger.info("partitions revoked group=%s partitions=%s", self.app.group_id, _names(tps))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # another worker may own them already: drop the state without writing anything
        tps = [(tp.topic, tp.partition) for tp in partitions]
        if self.coordinator is not None:
            for tp in tps:
                self.coordinator.drop(tp)
        self._assignment_changed()
        logger.warning("partitions lost group=%s partitions=%s", self.app.group_id, _names(tps))

    def _assignment_changed(self) -> None:
        self.sensor.on_assignment(list(self.coordinator.progress) if self.coordinator else [])
        self._report(force=True)

    def _commit(self, tp: Partition, offset: int) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self._consumer.commit(offsets=[TopicPartition(tp[0], tp[1], offset)], asynchronous=False)
        except KafkaException as exc:
            # the checkpoint is the truth; a failed commit only delays what lag monitors see
            logger.warning("commit failed topic=%s partition=%d offset=%d error=%s", *tp, offset, exc)
            return False
        return True

    def _committed(self, tp: Partition) -> tuple[int | None, str | None]:
        """``tp``'s committed offset and metadata (stable: pending transactional offsets resolved)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            (found,) = self._consumer.committed([TopicPartition(*tp)], timeout=30)
        except KafkaException as exc:
            raise StreamsError(f"cannot read the committed offset of {tp[0]}-{tp[1]}: {exc}") from exc
        if found.error is not None:
            raise StreamsError(f"cannot read the committed offset of {tp[0]}-{tp[1]}: {found.error}")
        return (found.offset if found.offset >= 0 else None), (found.metadata or None)

    def _on_kafka_error(self, err: Any) -> None:
        """librdkafka's error callback (transport errors, all brokers down, ...): count and log."""
        kind = str(err.name()).lower().lstrip("_")
        self.sensor.on_broker_error(kind, bool(err.fatal()))
        if err.fatal():
            logger.error("fatal Kafka client error kind=%s error=%s", kind, err)
        else:
            logger.warning("Kafka client error kind=%s error=%s", kind, err)

    # ------------------------------------------------------------------ reports and warm starts

    def _report(self, force: bool = False) -> None:
        """About once a second: lag, series and alert gauges to the sensors (and the status file)."""
        now = time.monotonic()
        if not force and now - self._last_report < 1.0:
            return
        self._last_report = now
        dets = [p.detector for p in self.pipelines.values()]
        alerts = self.alerts
        self.sensor.on_report(
            Gauges(
                lag=consumer_lag(
                    self._consumer, self.coordinator.progress if self.coordinator else {}, self._end_offsets
                ),
                series=sum(len(d) for d in dets),
                model_bytes=sum(len(d) * d.bytes_per_series for d in dets),
                models=model_moves(self.pipelines.values()),
                alerts=(
                    (
                        alerts.sent_total,
                        alerts.pending_count(),
                        alerts.dead_lettered_total,
                        alerts.dead_letter_count(),
                    )
                    if alerts is not None
                    else None
                ),
                results_txn=(self._txn.commits, self._txn.recovered) if self._txn is not None else None,
            )
        )

    def _load_warm_starts(self, paths: Sequence[str]) -> None:
        """Load models saved by ``cutstream backfill --warm-start-out`` (each file names its detector).

        Warm models belong to no partition until their series' first window closes; a partition
        restored from a checkpoint replaces them with its own (newer) state.
        """
        for path in paths:
            try:
                name = warm_start_detector(Path(path))
            except CheckpointError as exc:
                raise StreamsError(str(exc)) from exc
            pipe = self.pipelines.get(name)
            if pipe is None:
                raise StreamsError(
                    f"{path} holds models of detector {name!r}, which the config does not name"
                )
            keys = pipe.detector.from_state(load_warm_start(Path(path), pipe.spec), warm_start=True)
            logger.info("warm start loaded detector=%s series=%d file=%s", name, len(keys), path)

    def _make_alerts(self) -> Any:
        hooks = {s.name: s.alerts for s in self.app.detectors if s.alerts.webhooks or s.alerts.emails}
        if not hooks:
            return None
        from sinks.alerts import AlertService

        return AlertService(hooks, Path(self.app.data_dir) / "alerts", self.app.alert_delivery)


def _by_partition(msgs: list[Any]) -> dict[Partition, list[Any]]:
    """A consumed batch's messages per partition, in order; consume errors logged (fatal ones raised)."""
    out: dict[Partition, list[Any]] = {}
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.fatal():
                raise StreamsError(f"fatal Kafka error: {err}")
            logger.warning("consume error error=%s", err)
            continue
        out.setdefault((m.topic(), m.partition()), []).append(m)
    return out


def _names(tps: Sequence[Partition]) -> str:
    return ",".join(f"{t}-{p}" for t, p in tps)
