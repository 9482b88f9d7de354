"""The results topic exactly-once: one Kafka transaction per input partition, committed with its offset.

On a broker with transactions (Apache Kafka; not the embedded Tansu broker), every input partition
``p`` gets its own transactional producer, ``transactional.id = cutstream-<group>-<topic>-<p>``, so
that the worker that takes ``p`` over fences the previous owner and resolves its open transaction
(``init_transactions``). The results of ``p`` go to the results topic inside ``p``'s open
transaction, and the transaction commits together with ``p``'s input offset
(``send_offsets_to_transaction``): a ``read_committed`` consumer sees each result exactly once.

The local checkpoint file stays the truth, so the transaction follows the checkpoint (streams/
coordinator.py; docs/ARCHITECTURE.md, "The checkpoint/commit protocol"):

1. The results of ``p`` since its last committed transaction (a *segment*) are produced at once
   and kept in memory.
2. At ``p``'s checkpoint at input offset ``O`` the open segment is *sealed* (:meth:`seal`: it gets
   the next sequence number ``s`` and ``O``) and carried inside the checkpoint file
   (:meth:`carried`: every sealed segment not known to be committed). Results added while that
   file is being written are held back (kept, not produced): they belong to the next transaction.
3. Once the file is durable the coordinator commits (:meth:`commit`): offset ``O`` with the
   metadata ``cutstream-seq=s`` goes into the transaction, the transaction commits, the next one
   begins and the held-back results are produced in it.
4. When ``p`` is restored from a checkpoint, the committed offset's sequence ``k`` says which of
   the carried segments committed: those with ``s > k`` never did, and are produced again in one
   transaction with the checkpoint's offset before anything else; the others are skipped.

A sequence number and not the offset alone: windows closed by the idle rule give results with no
new input, so two checkpoints can share an offset, and only the sequence tells which committed.

A crash anywhere leaves each (timeseriesId, window) in exactly one committed transaction: before
the file is durable the open transaction is aborted by the next owner and its results are scored
again from the previous checkpoint; after it, they are in the file and produced again unless the
committed sequence says they committed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sinks.base import Partition, Sink, SinkBackpressure
from sinks.errors import SinkError
from sinks.kafka import produce_many
from sinks.record import RESULT_SCHEMA, ResultBatch

logger = logging.getLogger(__name__)

#: Version of the carried payload (an Arrow IPC stream in the checkpoint's ``sinks`` map).
PENDING_VERSION = 1
_SEQ, _OFFSET = "_cutstream_seq", "_cutstream_offset"
_PENDING_SCHEMA = RESULT_SCHEMA.append(pa.field(_SEQ, pa.int64())).append(pa.field(_OFFSET, pa.int64()))
_SEQ_META = re.compile(r"cutstream-seq=(\d+)")

#: Makes partition ``tp``'s transactional producer (the worker knows the client settings).
MakeProducer = Callable[[Partition], Any]
#: ``tp``'s committed offset and its commit metadata (None, None when nothing is committed).
Committed = Callable[[Partition], tuple[int | None, str | None]]


@dataclass
class Pending:
    """Sealed segments read back from a checkpoint: every record with its segment's sequence and
    offset, and the last sequence sealed (which may have had no records)."""

    table: pa.Table
    last_seq: int

    def after(self, seq: int | None, offset: int | None) -> list[ResultBatch]:
        """The records of segments newer than what committed: sequence ``seq`` when the commit
        says it, else input offset ``offset`` (a commit made without transactions), else all."""
        t = self.table
        if t.num_rows == 0:
            return []
        if seq is not None:
            keep = pc.greater(t.column(_SEQ), seq)
        elif offset is not None:
            keep = pc.greater(t.column(_OFFSET), offset)
        else:
            return [ResultBatch.from_table(t.drop_columns([_SEQ, _OFFSET]))]
        kept = t.filter(keep)
        return [ResultBatch.from_table(kept.drop_columns([_SEQ, _OFFSET]))] if kept.num_rows else []


def encode_pending(segments: list[tuple[int, int, list[ResultBatch]]], last_seq: int) -> bytes:
    """``(seq, offset, batches)`` per sealed segment → the bytes a checkpoint carries."""
    schema = _PENDING_SCHEMA.with_metadata({"version": str(PENDING_VERSION), "last_seq": str(last_seq)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for seq, offset, batches in segments:
            for b in batches:
                t = b.table()
                n = t.num_rows
                t = t.append_column(_SEQ, pa.array([seq] * n, pa.int64()))
                writer.write_table(t.append_column(_OFFSET, pa.array([offset] * n, pa.int64())))
    return bytes(sink.getvalue().to_pybytes())


def decode_pending(data: bytes) -> Pending | None:
    """What :func:`encode_pending` wrote (None for nothing: a checkpoint without transactions)."""
    if not data:
        return None
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    meta = reader.schema.metadata or {}
    version = int(meta.get(b"version", b"0"))
    if version != PENDING_VERSION:
        raise SinkError(
            f"the checkpoint carries results-topic data of version {version}, this cutstream reads "
            f"version {PENDING_VERSION}: run the cutstream version that wrote it"
        )
    return Pending(reader.read_all(), int(meta.get(b"last_seq", b"0")))


def committed_seq(metadata: str | None) -> int | None:
    """The sequence a transactional commit wrote into the offset's metadata (None: none there)."""
    m = _SEQ_META.fullmatch(metadata or "")
    return int(m.group(1)) if m else None


@dataclass
class _Segment:
    """Results of one future transaction; ``seq``/``offset`` set when its checkpoint is captured."""

    batches: list[ResultBatch] = field(default_factory=list)
    seq: int | None = None
    offset: int = -1


@dataclass
class _Txn:
    """One input partition's producer and segments: ``segments[0]`` is produced in the open
    transaction, the rest are held back; the last one is open (not sealed)."""

    producer: Any
    next_seq: int
    segments: list[_Segment] = field(default_factory=lambda: [_Segment()])


class TransactionalResultsSink(Sink):
    """The results topic through one transaction per input partition (see the module docstring).

    Args:
        make_producer: a transactional producer for an input partition (its ``transactional.id``
            names the partition).
        topic: the results topic.
        committed: an input partition's committed offset and metadata (the worker's consumer).
        group_metadata: the consumer's group metadata, for ``send_offsets_to_transaction``.
        on_ack: latency of each batch (``sinks.results_topic.AckCallback``).
        timeout_s: how long a flush, an ``init_transactions`` or a commit may take.
        attempts: commits tried (an abortable error aborts and produces the segment again).
    """

    name = "results-topic"  # the at-least-once sink's name: both read what the other carried

    def __init__(
        self,
        make_producer: MakeProducer,
        topic: str,
        committed: Committed,
        group_metadata: Callable[[], Any],
        on_ack: Callable[[float, int], None] | None = None,
        timeout_s: float = 30.0,
        attempts: int = 3,
    ) -> None:
        self.make_producer = make_producer
        self.topic = topic
        self.committed = committed
        self.group_metadata = group_metadata
        self.on_ack = on_ack
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._txns: dict[Partition, _Txn] = {}
        self._ready: dict[Partition, Any] = {}  # producers initialized by prepare, not yet restored
        #: records produced again on restores (segments whose transaction never committed)
        self.recovered = 0
        #: transactions committed (one per partition checkpoint, and one per recovery)
        self.commits = 0

    # -- the Sink interface -----------------------------------------------------------------------

    def add(self, tp: Partition, batch: ResultBatch) -> None:
        if len(batch) == 0:
            return
        txn = self._txn(tp)
        txn.segments[-1].batches.append(batch)
        if len(txn.segments) == 1:  # no checkpoint of tp waiting for its commit: produce now
            self._produce(txn.producer, batch)

    def tick(self, tp: Partition, next_offset: int, now: float) -> None:
        txn = self._txns.get(tp)
        if txn is not None:
            txn.producer.poll(0)

    def flush(self, tp: Partition, next_offset: int) -> None:
        """Wait until the open transaction's records are acknowledged (the commit is then quick);
        a broker that does not answer postpones the checkpoint, as for the at-least-once sink."""
        left = self._txn(tp).producer.flush(self.timeout_s)
        if left:
            raise SinkBackpressure(
                f"{left} results not delivered to the broker within {self.timeout_s:.0f}s "
                f"(topic {self.topic!r}; is the broker reachable?)"
            )

    def seal(self, tp: Partition, next_offset: int) -> None:
        txn = self._txn(tp)
        seg = txn.segments[-1]
        seg.seq, seg.offset = txn.next_seq, next_offset
        txn.next_seq += 1
        txn.segments.append(_Segment())

    def carried(self, tp: Partition) -> bytes:
        txn = self._txn(tp)
        sealed = [(s.seq, s.offset, s.batches) for s in txn.segments if s.seq is not None]
        return encode_pending(sealed, txn.next_seq - 1)

    def prepare(self, tps: list[Partition]) -> None:
        """Start the transactional producers of newly assigned partitions, all at once.

        ``init_transactions`` (which fences the previous owner) takes a round trip or more to the
        transaction coordinator; done here, at the assignment and in parallel, it is not paid one
        partition at a time in the processing loop (where a partition without a checkpoint is
        restored, at its first message).
        """
        from concurrent.futures import ThreadPoolExecutor

        todo = [tp for tp in dict.fromkeys(tps) if tp not in self._txns and tp not in self._ready]
        if not todo:
            return
        t0 = time.monotonic()
        producers = {tp: self.make_producer(tp) for tp in todo}
        with ThreadPoolExecutor(min(len(todo), 8), thread_name_prefix="cutstream-txn-init") as pool:
            futures = {tp: pool.submit(self._init, tp, p) for tp, p in producers.items()}
        self._ready.update(producers)  # closed by drop/close even when one failed
        for f in futures.values():
            f.result()  # the first failure raises
        logger.info("results transactions ready partitions=%d init_s=%.2f", len(todo), time.monotonic() - t0)

    def _init(self, tp: Partition, producer: Any) -> None:
        from confluent_kafka import KafkaException

        try:
            producer.init_transactions(self.timeout_s)
        except KafkaException as exc:
            raise SinkError(
                f"cannot start transactions for the results of {tp[0]}-{tp[1]}: {exc.args[0]}; "
                "set results_guarantee to at_least_once if this broker does not support them"
            ) from exc

    def restore(self, tp: Partition, offset: int, carried: bytes) -> int:
        """Take ``tp`` over at ``offset``: fence the previous owner (unless :meth:`prepare` did),
        then produce and commit the carried results whose transaction never committed. Returns 0
        (nothing is removed)."""
        producer = self._ready.pop(tp, None)
        self.drop(tp)
        if producer is None:
            producer = self.make_producer(tp)
            self._init(tp, producer)
        pending = decode_pending(carried)
        k_offset, meta = self.committed(tp)
        k_seq = committed_seq(meta)
        last = max(pending.last_seq if pending else 0, k_seq or 0)
        txn = self._txns[tp] = _Txn(producer, next_seq=last + 1)
        if k_offset is not None and k_offset > offset:
            logger.warning(
                "committed offset is past the checkpoint topic=%s partition=%d committed=%d "
                "checkpoint=%d: results from there are produced again (is data_dir shared?)",
                *tp,
                k_offset,
                offset,
            )
        todo = pending.after(k_seq, k_offset) if pending else []
        if todo:
            txn.segments.insert(0, _Segment(todo, seq=last, offset=offset))
            producer.begin_transaction()
            for batch in todo:
                self._produce(producer, batch)
            self._commit(tp, txn)
            n = sum(len(b) for b in todo)
            self.recovered += n
            logger.info(
                "uncommitted results produced again topic=%s partition=%d records=%d seq=%d committed_seq=%s",
                *tp,
                n,
                last,
                k_seq,
            )
        producer.begin_transaction()
        return 0

    def commit(self, tp: Partition, offset: int) -> bool:
        """The checkpoint of ``tp`` at ``offset`` is durable: commit its transaction with the offset,
        begin the next and produce what was held back. False when ``tp`` is no longer ours."""
        txn = self._txns.get(tp)
        if txn is None:
            logger.warning("no transaction to commit topic=%s partition=%d offset=%d", *tp, offset)
            return False
        if txn.segments[0].offset != offset:
            if any(seg.offset == offset for seg in txn.segments[1:]):
                raise SinkError(
                    f"transaction of {tp[0]}-{tp[1]} out of order: committing offset {offset}, "
                    f"the open transaction is for {txn.segments[0].offset}"
                )
            # a checkpoint taken before tp was lost and assigned again: not this assignment's
            logger.warning(
                "commit of an earlier assignment skipped topic=%s partition=%d offset=%d", *tp, offset
            )
            return False
        self._commit(tp, txn)
        txn.producer.begin_transaction()
        for batch in txn.segments[0].batches:
            self._produce(txn.producer, batch)
        return True

    def drop(self, tp: Partition) -> None:
        """``tp`` is no longer ours: abort its open transaction (revoked after its commit it is
        empty; lost, its results are the next owner's to produce) and close its producer."""
        txn = self._txns.pop(tp, None)
        if txn is not None:
            self._close(tp, txn)
        ready = self._ready.pop(tp, None)
        if ready is not None:
            ready.close()

    def close(self) -> None:
        for tp in [*self._txns, *self._ready]:
            self.drop(tp)

    # -- helpers ----------------------------------------------------------------------------------

    def _txn(self, tp: Partition) -> _Txn:
        txn = self._txns.get(tp)
        if txn is None:
            raise SinkError(f"results of {tp[0]}-{tp[1]}, a partition without a transaction (not restored)")
        return txn

    def _produce(self, producer: Any, batch: ResultBatch) -> None:
        keys, values = batch.keys, batch.messages()
        cb = self._ack_cb(batch.closed_at, time.monotonic(), len(batch)) if self.on_ack else None
        produce_many(producer, self.topic, values[:-1], keys[:-1])
        produce_many(producer, self.topic, values[-1:], keys[-1:], on_delivery=cb)
        producer.poll(0)

    def _ack_cb(self, closed_at: float | None, enqueued: float, n: int) -> Callable[[Any, Any], None]:
        start = enqueued if closed_at is None else closed_at

        def cb(err: Any, msg: Any) -> None:
            if err is None and self.on_ack is not None:
                acked = msg.latency()
                waited = acked if acked is not None else time.monotonic() - enqueued
                self.on_ack(enqueued - start + waited, n)

        return cb

    def _commit(self, tp: Partition, txn: _Txn) -> None:
        """Commit ``segments[0]`` (produced in the open transaction) with its offset and sequence.

        A retriable error retries the step; an abortable one aborts the transaction, begins another
        and produces the segment again (it is in memory), up to ``attempts`` times; a fatal one (this
        producer was fenced: another worker took the partition over) raises.
        """
        from confluent_kafka import KafkaException, TopicPartition

        seg = txn.segments[0]
        meta = f"cutstream-seq={seg.seq}"
        offsets = [TopicPartition(tp[0], tp[1], seg.offset, metadata=meta)]
        sent = False
        for attempt in range(1, self.attempts + 1):
            try:
                if not sent:
                    txn.producer.send_offsets_to_transaction(offsets, self.group_metadata(), self.timeout_s)
                    sent = True
                txn.producer.commit_transaction(self.timeout_s)
                txn.segments.pop(0)
                self.commits += 1
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or not (err.retriable() or err.txn_requires_abort()):
                    raise SinkError(
                        f"the results transaction of {tp[0]}-{tp[1]} failed for good ({err}); "
                        "another worker may own the partition now. The checkpoint keeps its results: "
                        "restart the worker"
                    ) from exc
                logger.warning(
                    "results transaction commit failed topic=%s partition=%d attempt=%d abort=%s error=%s",
                    *tp,
                    attempt,
                    err.txn_requires_abort(),
                    err,
                )
                if err.txn_requires_abort():
                    self._again(tp, txn, seg)
                    sent = False
        raise SinkError(
            f"could not commit the results transaction of {tp[0]}-{tp[1]} in {self.attempts} attempts; "
            "the checkpoint keeps its results: restart the worker"
        )

    def _again(self, tp: Partition, txn: _Txn, seg: _Segment) -> None:
        """Abort the open transaction and produce ``seg`` again in a new one."""
        from confluent_kafka import KafkaException

        try:
            txn.producer.abort_transaction(self.timeout_s)
            txn.producer.begin_transaction()
        except KafkaException as exc:
            raise SinkError(
                f"the results transaction of {tp[0]}-{tp[1]} could not be aborted ({exc.args[0]}); "
                "the checkpoint keeps its results: restart the worker"
            ) from exc
        for batch in seg.batches:
            self._produce(txn.producer, batch)

    def _close(self, tp: Partition, txn: _Txn) -> None:
        from confluent_kafka import KafkaException

        try:
            txn.producer.abort_transaction(min(self.timeout_s, 10.0))
        except KafkaException as exc:  # fenced or never begun: the broker resolves it
            logger.debug("abort on close topic=%s partition=%d error=%s", *tp, exc)
        close = getattr(txn.producer, "close", None)
        if close is not None:
            close()
