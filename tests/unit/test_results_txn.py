"""The transactional results sink's protocol, on an in-memory producer: what commits with which
offset, what a checkpoint carries, and what a restore produces again after a crash at each step."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from sinks.errors import SinkError
from sinks.record import ResultBatch
from sinks.results_topic import ResultsTopicSink
from sinks.results_txn import TransactionalResultsSink, committed_seq, decode_pending, encode_pending
from sinks.testing import FakeTransactionalProducer, result_table

TP = ("events", 3)


class Cluster:
    """What the broker keeps: each transactional producer made, and the group's committed offset."""

    def __init__(self) -> None:
        self.producers: list[FakeTransactionalProducer] = []

    def make(self, tp: Any) -> FakeTransactionalProducer:
        p = FakeTransactionalProducer()
        self.producers.append(p)
        return p

    def committed(self, tp: Any) -> tuple[int | None, str | None]:
        offsets = [o for p in self.producers for o in p.offsets if (o[0], o[1]) == tp]
        return (offsets[-1][2], offsets[-1][3]) if offsets else (None, None)

    def visible(self) -> list[bytes]:
        """The values a read_committed consumer sees."""
        return [v for p in self.producers for _, v in p.committed if v is not None]

    def sink(self) -> TransactionalResultsSink:
        return TransactionalResultsSink(self.make, "results", self.committed, lambda: "group-metadata")


def batch(first: int, n: int = 2) -> ResultBatch:
    """``n`` records, windows ``first`` .. ``first + n - 1`` of one series (values = window numbers)."""
    return ResultBatch.from_table(
        result_table(values=[float(first + i) for i in range(n)], start_ms=first * 60_000)
    )


def sealed_at_10() -> tuple[Cluster, TransactionalResultsSink]:
    """A sink restored at 0 whose first segment (windows 0 and 1) is sealed at offset 10."""
    cluster = Cluster()
    sink = cluster.sink()
    sink.restore(TP, 0, b"")
    sink.add(TP, batch(0))
    sink.seal(TP, 10)
    return cluster, sink


def windows(values: list[bytes]) -> list[int]:
    import json

    return sorted(json.loads(v)["windowStart"] // 60_000 for v in values)


def test_results_commit_with_their_checkpoint_offset_and_later_ones_wait():
    cluster = Cluster()
    sink = cluster.sink()
    sink.restore(TP, 0, b"")
    sink.add(TP, batch(0))
    producer = cluster.producers[0]
    assert len(producer.open) == 2  # produced at once, inside the open transaction
    sink.flush(TP, 10)
    sink.seal(TP, 10)
    carried = sink.carried(TP)
    sink.add(TP, batch(2))  # while the checkpoint file is written: held back
    assert len(producer.open) == 2 and cluster.visible() == []
    assert sink.commit(TP, 10)
    assert windows(cluster.visible()) == [0, 1]
    assert producer.offsets == [("events", 3, 10, "cutstream-seq=1")]
    assert len(producer.open) == 2  # the held-back records, in the next transaction
    assert [len(b) for b in decode_pending(carried).after(None, None)] == [2]


def test_two_checkpoints_in_flight_commit_in_order():
    cluster, sink = sealed_at_10()
    sink.add(TP, batch(2))
    sink.seal(TP, 20)  # before the first file is durable: it carries both segments
    both = decode_pending(sink.carried(TP))
    sink.add(TP, batch(4))
    with pytest.raises(SinkError, match="out of order"):
        sink.commit(TP, 20)
    sink.commit(TP, 10)
    assert windows(cluster.visible()) == [0, 1]
    sink.commit(TP, 20)
    assert windows(cluster.visible()) == [0, 1, 2, 3]
    assert cluster.committed(TP) == (20, "cutstream-seq=2")
    assert windows([m for b in both.after(None, None) for m in b.messages()]) == [0, 1, 2, 3]
    assert windows([m for b in both.after(1, 10) for m in b.messages()]) == [2, 3]


@pytest.mark.parametrize("crash", ["before-commit", "after-commit"])
def test_a_restore_produces_exactly_what_never_committed(crash):
    cluster, sink = sealed_at_10()
    carried = sink.carried(TP)  # the durable checkpoint at 10
    if crash == "after-commit":
        sink.commit(TP, 10)
        sink.add(TP, batch(2))  # the re-run from offset 10 scores these again
    # crash: the next owner restores the checkpoint (its own producer fences this one)
    other = cluster.sink()
    other.restore(TP, 10, carried)
    assert windows(cluster.visible()) == [0, 1]  # once either way
    assert cluster.committed(TP) == (10, "cutstream-seq=1")
    assert other.recovered == (2 if crash == "before-commit" else 0)
    assert other.commits == (1 if crash == "before-commit" else 0)  # the recovery's own transaction
    other.add(TP, batch(2))
    other.seal(TP, 20)
    other.commit(TP, 20)
    assert other.commits == (2 if crash == "before-commit" else 1)
    assert windows(cluster.visible()) == [0, 1, 2, 3]
    assert cluster.committed(TP) == (20, "cutstream-seq=2")  # the sequence goes on from the file's


def test_two_checkpoints_at_one_offset_are_told_apart_by_the_sequence():
    # windows closed by the idle rule give results with no new input: a second checkpoint at 10
    cluster, sink = sealed_at_10()
    sink.commit(TP, 10)
    sink.add(TP, batch(2))
    sink.seal(TP, 10)
    carried = sink.carried(TP)  # durable, then a crash before its commit
    other = cluster.sink()
    other.restore(TP, 10, carried)
    assert windows(cluster.visible()) == [0, 1, 2, 3]


def test_a_commit_without_sequence_compares_offsets():
    pending = decode_pending(encode_pending([(4, 10, [batch(0)]), (5, 20, [batch(2)])], 5))
    assert pending is not None and pending.last_seq == 5
    assert windows([m for b in pending.after(None, 10) for m in b.messages()]) == [2, 3]
    assert pending.after(None, 20) == []
    assert pending.after(5, 20) == []
    assert committed_seq("cutstream-seq=12") == 12
    assert committed_seq("") is None and committed_seq("other") is None


def test_the_messages_come_back_byte_for_byte():
    b = batch(0, 5)
    (back,) = decode_pending(encode_pending([(1, 10, [b])], 1)).after(None, None)
    assert back.messages() == b.messages() and back.keys == b.keys


def test_an_abortable_error_aborts_and_produces_the_segment_again():
    cluster, sink = sealed_at_10()
    producer = cluster.producers[0]
    producer.fail_next = KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)
    sink.commit(TP, 10)
    assert producer.aborted == 1
    assert windows(cluster.visible()) == [0, 1]


def test_an_abort_that_fails_stops_with_the_reason():
    cluster, sink = sealed_at_10()
    producer = cluster.producers[0]
    producer.fail_next = KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)
    producer.fail_abort = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    with pytest.raises(SinkError, match="could not be aborted"):
        sink.commit(TP, 10)
    assert cluster.visible() == []


def test_a_fenced_producer_stops_with_the_reason():
    cluster, sink = sealed_at_10()
    cluster.producers[0].fail_next = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    with pytest.raises(SinkError, match="another worker may own the partition"):
        sink.commit(TP, 10)
    assert cluster.visible() == []


def test_a_lost_partition_aborts_and_commits_nothing():
    cluster, sink = sealed_at_10()
    sink.drop(TP)
    assert cluster.producers[0].aborted == 1 and cluster.producers[0].closed
    assert not sink.commit(TP, 10)  # the checkpoint became durable after the loss: not ours
    assert cluster.visible() == []
    sink.restore(TP, 0, b"")  # assigned again before that checkpoint's commit came
    sink.add(TP, batch(2))
    sink.seal(TP, 5)
    assert not sink.commit(TP, 10)  # the earlier assignment's: skipped
    assert sink.commit(TP, 5)
    assert windows(cluster.visible()) == [2, 3]


def test_the_at_least_once_sink_produces_what_a_transactional_checkpoint_carried():
    class Producer:
        def __init__(self) -> None:
            self.values: list[bytes] = []

        def produce(self, topic: str, value: bytes, key: Any = None, **kw: Any) -> None:
            self.values.append(value)

        def poll(self, timeout: float = 0) -> int:
            return 0

    from sinks.kafka import DeliveryTracker

    producer = Producer()
    sink = ResultsTopicSink(producer, "results", DeliveryTracker())
    sink.restore(TP, 10, encode_pending([(1, 10, [batch(0)])], 1))
    assert windows(producer.values) == [0, 1]
    assert sink.restore(TP, 10, b"") == 0


def test_prepare_starts_the_producers_of_an_assignment_once():
    cluster = Cluster()
    sink = cluster.sink()
    sink.prepare([TP, ("events", 4), TP])
    assert len(cluster.producers) == 2 and all(p.initialized for p in cluster.producers)
    sink.restore(TP, 0, b"")  # uses the prepared producer
    sink.prepare([TP])  # already ours: nothing new
    assert len(cluster.producers) == 2
    sink.add(TP, batch(0))
    assert len(cluster.producers[0].open) == 2
    sink.drop(("events", 4))  # revoked before its first message
    assert cluster.producers[1].closed
    sink.close()
    assert cluster.producers[0].closed


def test_pending_results_ride_in_the_checkpoint_file_and_old_files_have_none():
    from pathlib import Path

    from streams.checkpoint import Checkpoint, dumps, loads

    carried = encode_pending([(7, 42, [batch(0, 3)])], 7)
    back = loads(dumps(Checkpoint("events", 3, 42, sinks={"results-topic": carried})))
    pending = decode_pending(back.sinks["results-topic"])
    assert pending is not None and pending.last_seq == 7
    assert windows([m for b in pending.after(6, 0) for m in b.messages()]) == [0, 1, 2]
    # a checkpoint written before transactions (the golden layout-2 file): nothing pending, and a
    # restore from it commits nothing and numbers its next transaction after the committed one
    golden = Path(__file__).resolve().parents[1] / "golden" / "checkpoint_v2_detector_v1.ckpt"
    old = loads(golden.read_bytes())
    assert decode_pending(old.sinks.get("results-topic", b"")) is None
    cluster = Cluster()
    cluster.committed = lambda tp: (old.next_offset, "cutstream-seq=4")
    sink = cluster.sink()
    sink.restore(TP, old.next_offset, old.sinks.get("results-topic", b""))
    sink.add(TP, batch(0))
    sink.seal(TP, old.next_offset + 5)
    sink.commit(TP, old.next_offset + 5)
    assert cluster.producers[0].offsets == [("events", 3, old.next_offset + 5, "cutstream-seq=5")]


def test_a_payload_of_another_version_is_refused_with_what_to_do():
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("x", pa.int64())], metadata={"version": "9"})):
        pass
    with pytest.raises(SinkError, match="version 9"):
        decode_pending(sink.getvalue().to_pybytes())
