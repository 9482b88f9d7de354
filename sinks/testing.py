"""Test helpers that ship with sinks/: build result tables in RESULT_SCHEMA without a detector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from sinks.record import RESULT_SCHEMA, STAGE_INFERENCE, format_period, timeseries_id


def result_table(
    *,
    detector: str = "shop",
    measure: str = "quantity",
    dimensions: Mapping[str, str] | None = None,
    start_ms: int = 1_714_521_600_000,
    window_ms: int = 60_000,
    values: Sequence[float] = (),
    scores: Sequence[float] | None = None,
    expected: Sequence[float] | None = None,
    threshold: float = 70.0,
    confidence: float = 90.0,
    stage: str = STAGE_INFERENCE,
) -> pa.Table:
    """One series' consecutive windows as a RESULT_SCHEMA table; decision = score > threshold.

    Args:
        values: the aggregated measure per window (one row each).
        scores: anomalyScore per window (default 0).
        expected: expectedValue per window (default: the value itself).
    """
    dims = dict(dimensions or {"product_name": "item-A"})
    n = len(values)
    scores = list(scores) if scores is not None else [0.0] * n
    expected = list(expected) if expected is not None else list(values)
    sid = timeseries_id(detector, measure, dims)
    starts = [start_ms + i * window_ms for i in range(n)]
    rows = {
        "detectorName": [detector] * n,
        "measure": [measure] * n,
        "timeseriesId": [sid] * n,
        "dimensionList": [[{"name": k, "value": v} for k, v in sorted(dims.items())]] * n,
        "aggregatedMeasureValue": [float(v) for v in values],
        "detectionPeriodStartTime": [format_period(s) for s in starts],
        "detectionPeriodEndTime": [format_period(s + window_ms) for s in starts],
        "anomalyScore": [float(s) for s in scores],
        "anomalyDecisionThreshold": [threshold] * n,
        "anomalyDecision": [1 if s > threshold else 0 for s in scores],
        "anomalyConfidenceScore": [confidence] * n,
        "modelStage": [stage] * n,
        "processedDataPoints": [100 + i for i in range(n)],
        "expectedValue": [float(e) for e in expected],
        "rawScore": [float(s) / 50.0 for s in scores],
        "windowStart": starts,
        "missingWindow": [False] * n,
        "warmStarted": [False] * n,
        "expectedLow": [float(e) * 0.9 for e in expected],
        "expectedHigh": [float(e) * 1.1 for e in expected],
        "anomalyReason": ["value" if s > 0 else "" for s in scores],
        "valueScore": [float(s) for s in scores],
        "forestScore": [0.0] * n,
    }
    return pa.table(rows, schema=RESULT_SCHEMA)


class FakeTransactionalProducer:
    """A confluent-kafka transactional producer in memory, for the transactional sink's unit tests.

    ``committed`` holds the ``(key, value)`` of every message whose transaction committed, in
    order; ``offsets`` the offsets each commit carried (``(topic, partition, offset, metadata)``).
    ``fail_next`` (a ``KafkaError``) makes the next ``send_offsets_to_transaction`` or
    ``commit_transaction`` raise it once; ``fail_abort`` the next ``abort_transaction``.
    """

    def __init__(self) -> None:
        self.initialized = False
        self.in_txn = False
        self.open: list[tuple[bytes | str | None, bytes | None]] = []
        self.committed: list[tuple[bytes | str | None, bytes | None]] = []
        self.offsets: list[tuple[str, int, int, str | None]] = []
        self.aborted = 0
        self.closed = False
        self.fail_next: Any = None
        self.fail_abort: Any = None
        self._pending_offsets: list[tuple[str, int, int, str | None]] = []

    def _raise_if_asked(self) -> None:
        if self.fail_next is not None:
            from confluent_kafka import KafkaException

            err, self.fail_next = self.fail_next, None
            raise KafkaException(err)

    def init_transactions(self, timeout: float = -1) -> None:
        self.initialized = True

    def begin_transaction(self) -> None:
        if not self.initialized or self.in_txn:
            raise RuntimeError("begin_transaction out of order")
        self.in_txn = True

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | str | None = None, **kw: Any
    ) -> None:
        if not self.in_txn:
            raise RuntimeError("produce outside a transaction")
        self.open.append((key, value))
        if kw.get("on_delivery") is not None:
            kw["on_delivery"](None, _Delivered())

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any, timeout: float = -1) -> None:
        self._raise_if_asked()
        self._pending_offsets += [(o.topic, o.partition, o.offset, o.metadata) for o in offsets]

    def commit_transaction(self, timeout: float = -1) -> None:
        self._raise_if_asked()
        if not self.in_txn:
            raise RuntimeError("commit outside a transaction")
        self.committed += self.open
        self.offsets += self._pending_offsets
        self.open, self._pending_offsets, self.in_txn = [], [], False

    def abort_transaction(self, timeout: float = -1) -> None:
        if self.fail_abort is not None:
            from confluent_kafka import KafkaException

            err, self.fail_abort = self.fail_abort, None
            raise KafkaException(err)
        if not self.in_txn:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(KafkaError._STATE, "no transaction"))
        self.aborted += 1
        self.open, self._pending_offsets, self.in_txn = [], [], False

    def close(self) -> None:
        self.closed = True


class _Delivered:
    def latency(self) -> float:
        return 0.001
