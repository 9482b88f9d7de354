"""Test helpers that ship with streams/ (as bytewax ships ``bytewax/testing.py``): fault injection.

Nothing in the production path imports this module. ``cutstream.testing`` runs the worker command
with a :class:`KillAt` sensor (``python -m cutstream.testing worker --fault after-parquet:3 ...``);
the exactly-once test kills workers that way at the delicate points of the flush protocol.
"""

from __future__ import annotations

import logging
import os
import signal

from sinks.base import Partition
from streams.errors import StreamsError
from streams.sensors import Sensor

logger = logging.getLogger(__name__)

#: Where a worker can be killed: right after a Parquet write (before its checkpoint), right after
#: a checkpoint is durable (before its offset is committed: with transactions, before the results
#: transaction commits) and right after the commit (with transactions: the results held back while
#: the checkpoint was written are in the next, open transaction).
FAULT_POINTS = ("after-parquet", "after-checkpoint", "after-commit")


class KillAt(Sensor):
    """SIGKILLs its own process the ``n``-th time the worker passes ``point`` (see FAULT_POINTS)."""

    def __init__(self, point: str, n: int = 1) -> None:
        if point not in FAULT_POINTS:
            raise StreamsError(f"unknown fault point {point!r} (one of {', '.join(FAULT_POINTS)})")
        self.point = point
        self.n = n
        self.passes = 0

    @classmethod
    def parse(cls, fault: str) -> KillAt:
        """``<point>[:<n>]``, e.g. ``after-parquet:3``."""
        point, _, n = fault.partition(":")
        try:
            return cls(point, int(n or 1))
        except ValueError as exc:
            raise StreamsError(f"bad fault {fault!r}: expected <point>:<n>") from exc

    def _passed(self, point: str) -> None:
        if point != self.point:
            return
        self.passes += 1
        if self.passes >= self.n:
            logger.warning("fault injection: SIGKILL at point=%s pass=%d", point, self.passes)
            os.kill(os.getpid(), signal.SIGKILL)

    def on_written(self, tp: Partition, rows: int, files: int) -> None:
        self._passed("after-parquet")

    def on_checkpoint_saved(self, tp: Partition, next_offset: int) -> None:
        self._passed("after-checkpoint")

    def on_committed(self, tp: Partition, next_offset: int, ok: bool) -> None:
        if ok:
            self._passed("after-commit")
