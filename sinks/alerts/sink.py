"""Alerts as a sink: result batches go to the alert service's outbox at the Parquet cadence."""

from __future__ import annotations

import time

import pyarrow as pa

from sinks.alerts.service import AlertService
from sinks.base import Partition, Sink
from sinks.record import ResultBatch


class AlertSink(Sink):
    """Hands every result batch to :meth:`AlertService.observe`, at least every ``interval_s`` per
    partition and at each checkpoint (observing the same records again adds nothing: the outbox
    ignores windows a series has seen, so a replay after a crash sends no notice twice)."""

    name = "alerts"

    def __init__(self, service: AlertService, interval_s: float = 2.0) -> None:
        self.service = service
        self.interval_s = interval_s
        self._pending: dict[Partition, list[pa.Table]] = {}
        self._observed_at: dict[Partition, float] = {}

    def add(self, tp: Partition, batch: ResultBatch) -> None:
        self._pending.setdefault(tp, []).append(batch.table())

    def tick(self, tp: Partition, next_offset: int, now: float) -> None:
        if self._pending.get(tp) and now - self._observed_at.get(tp, 0.0) >= self.interval_s:
            self._observe(tp, now)

    def flush(self, tp: Partition, next_offset: int) -> None:
        self._observe(tp, time.monotonic())

    def drop(self, tp: Partition) -> None:
        self._pending.pop(tp, None)
        self._observed_at.pop(tp, None)

    def close(self) -> None:
        self.service.stop()

    def _observe(self, tp: Partition, now: float) -> None:
        self._observed_at[tp] = now
        tables = self._pending.pop(tp, None)
        if tables:
            self.service.observe(pa.concat_tables(tables))
