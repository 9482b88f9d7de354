"""The results topic sink: every result record as one JSON message, keyed by timeseriesId.

At-least-once: the worker calls :meth:`ResultsProducer.flush` before it commits offsets, and a
failed or timed-out delivery raises :class:`SinkError` so that the offsets are not committed.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from sinks.errors import SinkError

logger = logging.getLogger(__name__)

#: librdkafka settings whose values are never logged.
_SECRET_KEYS = ("password", "secret", "token", "key")


class ResultsProducer:
    """Produces result records (RESULT_SCHEMA tables) to a Kafka topic as JSON.

    Message value: the contract fields under their contract names (``dimensionList`` as a list of
    ``{"name", "value"}``), then the extras (``windowStart`` as epoch milliseconds); NaN as null.
    Key: ``timeseriesId`` (one series stays on one partition, in order).

    Example:
        >>> p = ResultsProducer("127.0.0.1:9092", "cutstream.results")  # doctest: +SKIP
        >>> p.produce(table); p.flush(10.0)  # doctest: +SKIP
    """

    def __init__(self, bootstrap: str, topic: str, extra_config: Mapping[str, str] | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "lz4",
        }
        config.update(extra_config or {})
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self._failed = 0
        self._first_error: str | None = None
        self.delivered = 0
        safe = {k: ("***" if any(s in k for s in _SECRET_KEYS) else v) for k, v in config.items()}
        logger.debug("results producer topic=%s config=%s", topic, safe)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is not None:
                self._failed += 1
                if self._first_error is None:
                    self._first_error = str(err)
            else:
                self.delivered += 1

    @staticmethod
    def to_messages(table: pa.Table) -> list[tuple[bytes, bytes]]:
        """(key, value) per record; the JSON the topic carries."""
        names = table.column_names
        if "windowStart" in names:
            table = table.set_column(
                names.index("windowStart"), "windowStart", table.column("windowStart").cast(pa.int64())
            )
        out = []
        for row in table.to_pylist():
            for k, v in row.items():
                if isinstance(v, float) and not math.isfinite(v):
                    row[k] = None
            out.append(
                (
                    str(row["timeseriesId"]).encode("utf-8"),
                    json.dumps(row, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
                        "utf-8"
                    ),
                )
            )
        return out

    def produce(self, table: pa.Table) -> int:
        """Queue every record of ``table``; returns how many. Blocks (polling) when the queue is full."""
        messages = self.to_messages(table)
        for key, value in messages:
            while True:
                try:
                    self._producer.produce(self.topic, value=value, key=key, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.1)
        self._producer.poll(0)
        return len(messages)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued record; raise SinkError if one failed or the timeout passed."""
        remaining = self._producer.flush(timeout)
        with self._lock:
            failed, first, self._failed, self._first_error = self._failed, self._first_error, 0, None
        if remaining > 0:
            raise SinkError(
                f"{remaining} result messages not delivered to topic {self.topic!r} within {timeout}s: "
                "is the broker reachable? offsets are not committed, the batch will be replayed"
            )
        if failed:
            raise SinkError(
                f"{failed} result messages failed to reach topic {self.topic!r} (first error: {first}); "
                "offsets are not committed, the batch will be replayed"
            )

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
