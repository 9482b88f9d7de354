"""The checkpoint/commit protocol of a worker's partitions, in one place.

For each assigned input partition (docs/ARCHITECTURE.md, "State and recovery"):

1. Sinks take every result batch as soon as it is scored (the results topic produces at once).
2. Every pass, each sink may write what is due (:meth:`Sink.tick`: Parquet every
   ``parquet_interval_s``, in files named after the input offsets they cover).
3. Every ``checkpoint_interval_s`` (or ``checkpoint_every_events``) the partition is checkpointed:
   every sink is flushed (the rest of the results to Parquet, the producer's messages acknowledged;
   a sink that cannot, postpones it), the state (windows, models, next offset, what the sinks carry)
   is captured, and the checkpoint thread encodes, writes and fsyncs the file; once the file is
   durable the next offset is committed, explicitly and synchronously. At most one partition
   starts a checkpoint per pass, which spreads their cost.
4. When a partition is assigned, its checkpoint is loaded and each sink forgets what it wrote from
   the checkpoint's offset on (:meth:`Sink.restore`: Parquet deletes those files) **before anything
   is processed**; a partition without a checkpoint does the same from its first message's offset.
   The re-run writes them again: Parquet is exactly-once, the results topic at-least-once.

With Kafka transactions (``sinks.results_txn``), ``commit`` commits the partition's results
transaction together with its offset instead: each sink's :meth:`Sink.seal` marks, at the capture,
which results belong to the checkpoint, and the transactional sink carries them in the file until
their transaction commits (a restore produces the ones that never did): the results topic is then
exactly-once too.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sinks.base import Partition, Sink, SinkBackpressure
from streams.checkpoint import Checkpoint, CheckpointStore
from streams.config import WorkerSettings
from streams.pipeline import DetectorPipeline, PartitionState
from streams.sensors import Sensor

logger = logging.getLogger(__name__)

#: Commits an input offset: (topic, partition) and the next offset to consume; True when it worked.
Commit = Callable[[Partition, int], bool]


@dataclass
class Progress:
    """Where one assigned partition stands."""

    next_offset: int | None = None  # first offset not yet in the state (None until the first message)
    checkpoint_offset: int | None = None  # next_offset of the last checkpoint
    events_since_checkpoint: int = 0
    dirty: bool = False  # the state changed since the last checkpoint
    last_checkpoint_at: float = field(default_factory=time.monotonic)


class CheckpointCoordinator:
    """Runs the protocol of the module docstring for the partitions a worker holds.

    Args:
        store: where the partitions' checkpoint files live.
        pipelines: per topic, the pipelines of the detectors that read it.
        sinks: every sink, in the order they flush (the results topic, Parquet, alerts).
        commit: commits a partition's next offset.
        sensor: hears about restores, checkpoints, postponements and commits.
        settings: the checkpoint cadence.
    """

    def __init__(
        self,
        store: CheckpointStore,
        pipelines: Mapping[str, Sequence[DetectorPipeline[Partition]]],
        sinks: Sequence[Sink],
        commit: Commit,
        sensor: Sensor,
        settings: WorkerSettings,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.sinks = list(sinks)
        self.commit = commit
        self.sensor = sensor
        self.settings = settings
        self.progress: dict[Partition, Progress] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cutstream-checkpoint")
        #: checkpoints being written: partition, offset, the write, the parked segments it names
        self._inflight: collections.deque[tuple[Partition, int, Future[Path], dict[str, dict[str, str]]]] = (
            collections.deque()
        )

    # -- assignment -------------------------------------------------------------------------------

    def assign(self, tp: Partition) -> int | None:
        """Take over ``tp``: restore its checkpoint (if any); returns the offset to seek to."""
        progress = self.progress[tp] = Progress()
        ckpt = self.store.load(*tp)
        if ckpt is None:
            return None  # the start offset is known with the first message (see start)
        for pipe in self.pipelines[tp[0]]:
            if pipe.name in ckpt.detectors:
                pipe.restore(
                    tp,
                    PartitionState(
                        ckpt.windows[pipe.name],
                        ckpt.detectors[pipe.name],
                        list(ckpt.series.get(pipe.name, ())),
                        dict(ckpt.parked.get(pipe.name, {})),
                    ),
                )
        progress.next_offset = progress.checkpoint_offset = ckpt.next_offset
        removed = self._restore_sinks(tp, ckpt.next_offset, ckpt.sinks)
        self.sensor.on_restored(tp, ckpt.next_offset, removed)
        logger.info(
            "partition restored topic=%s partition=%d next_offset=%d series=%d parquet_removed=%s",
            *tp,
            ckpt.next_offset,
            sum(len(p.series_of(tp)) for p in self.pipelines[tp[0]]),
            removed,
        )
        return ckpt.next_offset

    def start(self, tp: Partition, first_offset: int) -> None:
        """A partition without a checkpoint starts at its first message (committed offset or earliest)."""
        removed = self._restore_sinks(tp, first_offset, {})
        p = self.progress[tp]
        p.next_offset = p.checkpoint_offset = first_offset
        logger.info(
            "partition started without checkpoint topic=%s partition=%d offset=%d parquet_removed=%s",
            *tp,
            first_offset,
            removed,
        )

    def _restore_sinks(self, tp: Partition, offset: int, carried: Mapping[str, bytes]) -> int:
        return sum(sink.restore(tp, offset, carried.get(sink.name, b"")) for sink in self.sinks)

    def drop(self, tp: Partition) -> None:
        """Forget ``tp`` (revoked after its checkpoint, or lost): state, models, sink buffers."""
        self.progress.pop(tp, None)
        for pipe in self.pipelines.get(tp[0], ()):
            pipe.drop(tp)
        for sink in self.sinks:
            sink.drop(tp)

    # -- every pass -------------------------------------------------------------------------------

    def consumed(self, tp: Partition, next_offset: int, n: int) -> None:
        """``n`` messages of ``tp`` are in the state, up to ``next_offset``."""
        p = self.progress[tp]
        p.next_offset = next_offset
        p.events_since_checkpoint += n
        p.dirty = True

    def changed(self, tp: Partition) -> None:
        """The state of ``tp`` changed without input (windows closed by the idle rule)."""
        self.progress[tp].dirty = True

    def tick(self, now: float) -> None:
        """Let the sinks write what is due; start at most one due checkpoint (spreads their cost)."""
        s = self.settings
        due: list[tuple[float, Partition]] = []
        for tp, p in self.progress.items():
            if p.next_offset is None:
                continue
            for sink in self.sinks:
                sink.tick(tp, p.next_offset, now)
            overdue = now - p.last_checkpoint_at - s.checkpoint_interval_s
            by_events = (
                bool(s.checkpoint_every_events) and p.events_since_checkpoint >= s.checkpoint_every_events
            )
            if p.dirty and (overdue >= 0 or by_events):
                due.append((float("inf") if by_events else overdue, tp))
        if due:
            self.checkpoint(max(due, key=lambda d: d[0])[1])
        self.drain(block=False)

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self, tp: Partition) -> None:
        """Sinks flushed, then the state captured and handed to the checkpoint thread.

        The state is captured here (``to_state`` returns copies); encoding, writing and fsyncing
        the file happen on the checkpoint thread, and the commit follows in this thread once the
        file is durable (:meth:`drain`), so a large checkpoint does not stall scoring.
        """
        p = self.progress[tp]
        p.last_checkpoint_at = time.monotonic()
        if p.next_offset is None:
            return
        try:
            for sink in self.sinks:
                sink.flush(tp, p.next_offset)
        except SinkBackpressure as exc:
            # retried at the next checkpoint interval; the last checkpoint stays the truth
            logger.warning("checkpoint postponed topic=%s partition=%d reason=%s", *tp, exc)
            self.sensor.on_checkpoint_postponed(tp, str(exc))
            return
        states = {pipe.name: pipe.state(tp) for pipe in self.pipelines[tp[0]]}
        for sink in self.sinks:  # what was added so far belongs to this checkpoint
            sink.seal(tp, p.next_offset)
        ckpt = Checkpoint(
            topic=tp[0],
            partition=tp[1],
            next_offset=p.next_offset,
            windows={name: s.windows for name, s in states.items()},
            detectors={name: s.detector for name, s in states.items()},
            series={name: s.series for name, s in states.items()},
            parked={name: s.parked for name, s in states.items() if s.parked},
            # e.g. the rows of the idle file at next_offset, which a restore from here deletes
            sinks={sink.name: data for sink in self.sinks if (data := sink.carried(tp))},
            written_at_ms=int(time.time() * 1000),
        )
        self._inflight.append((tp, p.next_offset, self._pool.submit(self.store.save, ckpt), ckpt.parked))
        p.checkpoint_offset = p.next_offset
        p.events_since_checkpoint = 0
        p.dirty = False

    def drain(self, block: bool) -> None:
        """Commit the offsets of the checkpoints that are durable (in order; all of them if ``block``)."""
        while self._inflight:
            tp, offset, fut, parked = self._inflight[0]
            if not block and not fut.done():
                return
            fut.result()  # a failed write raises here: the worker stops before committing past it
            self._inflight.popleft()
            for pipe in self.pipelines[tp[0]]:  # segments no checkpoint of tp will need any more
                if pipe.park is not None:
                    named = [parked.get(pipe.name, {})]
                    named += [q.get(pipe.name, {}) for t, _, _, q in self._inflight if t == tp]
                    pipe.park.collect(tp, [seg for m in named for seg in m.values()])
            self.sensor.on_checkpoint_saved(tp, offset)
            self.sensor.on_committed(tp, offset, self.commit(tp, offset))

    def checkpoint_all(self, tps: Sequence[Partition] | None = None) -> None:
        """Checkpoint every partition (of ``tps``) that changed, and wait until all are committed."""
        for tp in list(self.progress) if tps is None else tps:
            if tp in self.progress and self.progress[tp].dirty:
                self.checkpoint(tp)
        self.drain(block=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
