"""sinks.kafka: the produce helper waits while the local queue is full; it skips and repeats nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from sinks.kafka import DeliveryTracker, produce, produce_many
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_a_full_queue_delays_but_keeps_order(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("produce")
    tracker = DeliveryTracker()
    # a queue of 50 messages: 2,000 messages fill it many times over
    producer = Producer(
        {"bootstrap.servers": bootstrap, "queue.buffering.max.messages": 50, "on_delivery": tracker}
    )
    values = [str(i).encode() for i in range(2000)]
    assert produce_many(producer, topic, values[:1000], [b"k"] * 1000) == 1000
    produce_many(producer, topic, values[1000:1999], timestamps=list(range(1000, 1999)))
    produce(producer, topic, values[1999], b"last", headers=[("h", b"1")])
    assert producer.flush(30) == 0
    tracker.raise_if_failed("test")
    assert tracker.delivered == 2000

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list = []
    try:
        wait_for(
            lambda: (
                got.extend(m for m in consumer.consume(500, 0.5) if m.error() is None) or len(got) >= 2000
            ),
            30,
            message="2,000 messages",
        )
    finally:
        consumer.close()
    assert [m.value() for m in got] == values
    assert got[1500].timestamp()[1] == 1500 and got[-1].headers() == [("h", b"1")]
