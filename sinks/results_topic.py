"""The results topic sink: every result record as one JSON message, keyed by timeseriesId.

At-least-once (``sinks.results_txn`` is the exactly-once sink, on brokers with transactions):
records are produced as soon as their batch is added (the results topic is the latency-critical
sink), and :meth:`ResultsTopicSink.flush` waits until the broker has acknowledged them before the
driver commits offsets; a failed delivery raises :class:`SinkError`, one still queued after the
timeout raises :class:`SinkBackpressure` (the checkpoint waits).
The JSON is :meth:`sinks.record.ResultBatch.messages`: the contract fields under their names
(``dimensionList`` as a list of ``{"name", "value"}``), then the extras (``windowStart`` in
epoch ms); NaN as null.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from sinks.base import Partition, Sink, SinkBackpressure
from sinks.errors import SinkError
from sinks.kafka import DeliveryTracker, produce, produce_many
from sinks.record import ResultBatch
from sinks.results_txn import decode_pending

logger = logging.getLogger(__name__)

#: librdkafka settings whose values are never logged.
_SECRET_KEYS = ("password", "secret", "token", "key")

#: Called with (seconds from the windows' close to the broker's acknowledgement, records) once per
#: added batch, when its last record is acknowledged.
AckCallback = Callable[[float, int], None]


class ResultsTopicSink(Sink):
    """Produces every added batch to ``topic`` with a producer it shares with its driver.

    Args:
        producer: a confluent-kafka ``Producer`` whose ``on_delivery`` is ``tracker``.
        topic: the results topic.
        tracker: counts the producer's failed deliveries.
        on_ack: latency of each batch (see :data:`AckCallback`).
        flush_timeout_s: how long :meth:`flush` waits for acknowledgements before it postpones.
    """

    name = "results-topic"

    def __init__(
        self,
        producer: Any,
        topic: str,
        tracker: DeliveryTracker,
        on_ack: AckCallback | None = None,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.tracker = tracker
        self.on_ack = on_ack
        self.flush_timeout_s = flush_timeout_s

    def add(self, tp: Partition, batch: ResultBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        keys, values = batch.keys, batch.messages()
        produce_many(self.producer, self.topic, values[:-1], keys[:-1])
        cb = self._ack_cb(batch.closed_at, time.monotonic(), n) if self.on_ack is not None else self.tracker
        produce(self.producer, self.topic, values[-1], keys[-1], on_delivery=cb)
        self.producer.poll(0)

    def flush(self, tp: Partition, next_offset: int) -> None:
        """Wait for every record (and dead letter) in flight on the shared producer.

        Undelivered messages stay queued in librdkafka, which retries them until
        ``message.timeout.ms``, so a broker outage postpones checkpoints instead of stopping the
        driver; a delivery that failed for good raises.
        """
        left = self.producer.flush(self.flush_timeout_s)
        self.tracker.raise_if_failed(f"result/dead-letter (topic {self.topic!r})")
        if left:
            raise SinkBackpressure(
                f"{left} messages not delivered to the broker within {self.flush_timeout_s:.0f}s "
                f"(topic {self.topic!r}; is the broker reachable?)"
            )

    def restore(self, tp: Partition, offset: int, carried: bytes) -> int:
        """Results a checkpoint of the transactional sink carries (a worker that ran exactly-once
        before) may never have committed: produce them all again (at-least-once: maybe twice)."""
        pending = decode_pending(carried)
        for batch in pending.after(None, None) if pending is not None else ():
            self.add(tp, batch)
        return 0

    def _ack_cb(self, closed_at: float | None, enqueued: float, n: int) -> Callable[[Any, Any], None]:
        """Delivery report of a batch's last record: window close → acknowledged by the broker.

        ``msg.latency()`` is librdkafka's produce → acknowledgement time, so the figure does not
        depend on when the driver gets round to serving delivery reports.
        """
        start = enqueued if closed_at is None else closed_at

        def cb(err: Any, msg: Any) -> None:
            self.tracker(err, msg)
            if err is None and self.on_ack is not None:
                acked = msg.latency()
                total = enqueued - start + (acked if acked is not None else time.monotonic() - enqueued)
                self.on_ack(total, n)

        return cb


class ResultsProducer:
    """A results topic sink with its own producer, for tools and tests: ``produce(table)``, ``flush()``.

    Idempotent producer, ``acks=all``, ``murmur2_random`` (the Java clients' key → partition).

    Example:
        >>> p = ResultsProducer("127.0.0.1:9092", "cutstream.results")  # doctest: +SKIP
        >>> p.produce(table); p.flush(10.0)  # doctest: +SKIP
    """

    def __init__(self, bootstrap: str, topic: str, extra_config: Mapping[str, str] | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._tracker = DeliveryTracker()
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "lz4",
        }
        config.update(extra_config or {})
        safe = {k: ("***" if any(s in k for s in _SECRET_KEYS) else v) for k, v in config.items()}
        logger.debug("results producer topic=%s config=%s", topic, safe)
        self._sink = ResultsTopicSink(
            Producer({**config, "on_delivery": self._tracker}), topic, self._tracker
        )

    @property
    def delivered(self) -> int:
        return self._tracker.delivered

    def produce(self, table: pa.Table) -> int:
        """Queue every record of ``table``; returns how many. Blocks (polling) when the queue is full."""
        batch = ResultBatch.from_table(table)
        self._sink.add(("", -1), batch)
        return len(batch)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued record; raise SinkError if one failed or the timeout passed."""
        self._sink.flush_timeout_s = timeout
        try:
            self._sink.flush(("", -1), 0)
        except SinkBackpressure as exc:
            raise SinkError(f"{exc}: offsets are not committed, the batch will be replayed") from exc

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
