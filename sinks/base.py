"""The sink interface: every result batch goes to each sink, and a checkpoint flushes them.

Modelled on quix-streams' ``sinks/base/sink.py``: a sink is *added to* per batch and *flushed*
per input partition when the driver checkpoints that partition; offsets are committed only after
every sink's flush returned. A sink that cannot make its data durable right now raises
:class:`SinkBackpressure` from :meth:`Sink.flush`, and the checkpoint is postponed and retried
(quix-streams' ``SinkBackpressureError``); any other error stops the driver before it commits.

The Parquet writer, the results topic and alerts are the sinks (docs/ARCHITECTURE.md, "Sinks and
alerts"); ``streams.coordinator`` drives them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from sinks.errors import SinkError
from sinks.record import ResultBatch

#: An input partition, ``(topic, partition)``: where the results of a batch came from.
Partition = tuple[str, int]


class SinkBackpressure(SinkError):
    """The sink cannot make its data durable now (e.g. the broker is unreachable): checkpoint later."""


class Sink(ABC):
    """Takes every result batch of a partition; makes them durable when flushed."""

    #: a short, fixed name (logs, metrics, the checkpoint's record of what a sink carries)
    name: str = "sink"

    @abstractmethod
    def add(self, tp: Partition, batch: ResultBatch) -> None:
        """Take the results of one scoring step for ``tp`` (a sink may act on them at once)."""

    @abstractmethod
    def flush(self, tp: Partition, next_offset: int) -> None:
        """Make everything added for ``tp`` durable; ``next_offset`` = the first input offset not in it.

        Raises:
            SinkBackpressure: not now; the caller keeps the data and tries at its next checkpoint.
        """

    def tick(self, tp: Partition, next_offset: int, now: float) -> None:  # noqa: B027
        """Called every pass of the driver (``now``: monotonic seconds): write what is due, if anything."""

    def restore(self, tp: Partition, offset: int, carried: bytes) -> int:
        """``tp`` restarts from ``offset``: forget what was written from there on (it will be again).

        ``carried`` is what :meth:`carried` gave at that checkpoint. Returns how many outputs
        were removed.
        """
        return 0

    def seal(self, tp: Partition, next_offset: int) -> None:  # noqa: B027
        """A checkpoint of ``tp`` at ``next_offset`` is being captured (every flush returned):
        what was added so far belongs to it, what is added from now on to the next one. Called
        right before :meth:`carried`, and only for a checkpoint that is then written."""

    def carried(self, tp: Partition) -> bytes:
        """What a checkpoint of ``tp`` must carry for :meth:`restore` (nothing by default)."""
        return b""

    def drop(self, tp: Partition) -> None:  # noqa: B027
        """``tp`` is no longer ours: forget what was added for it and not flushed."""

    def close(self) -> None:  # noqa: B027
        """Release what the sink holds (threads, connections)."""
