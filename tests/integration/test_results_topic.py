"""The results topic sink against the embedded broker: JSON per record, keyed by series; errors surface."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from sinks.errors import SinkError
from sinks.record import CONTRACT_NAMES
from sinks.results_topic import ResultsProducer
from sinks.testing import result_table
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.brokers("tansu", "kafka")
def test_records_arrive_as_contract_json(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("results")
    table = result_table(values=[1.0, 2.0, float("nan")], scores=[0.0, 80.0, 0.0], expected=[1.0, 1.0, 1.0])
    producer = ResultsProducer(bootstrap, topic)
    assert producer.produce(table) == 3
    producer.flush(30)
    assert producer.delivered == 3

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list = []
    try:
        wait_for(
            lambda: got.extend(m for m in consumer.consume(10, 0.5) if m.error() is None) or len(got) >= 3,
            30,
            message="three result messages",
        )
    finally:
        consumer.close()
    values = [json.loads(m.value()) for m in got]
    assert [m.key().decode() for m in got] == [v["timeseriesId"] for v in values]
    first = values[0]
    assert list(first)[: len(CONTRACT_NAMES)] == list(CONTRACT_NAMES)
    assert first["dimensionList"] == [{"name": "product_name", "value": "item-A"}]
    assert first["detectionPeriodStartTime"] == "2024-05-01 00:00:00"
    assert first["windowStart"] == 1_714_521_600_000
    assert [v["anomalyDecision"] for v in values] == [0, 1, 0]
    assert values[2]["aggregatedMeasureValue"] is None  # NaN becomes null, the JSON stays valid


def test_undeliverable_records_raise_on_flush() -> None:
    producer = ResultsProducer(
        "127.0.0.1:1", "nowhere", {"message.timeout.ms": "500", "socket.timeout.ms": "500"}
    )
    producer.produce(result_table(values=[1.0]))
    with pytest.raises(SinkError, match="nowhere"):
        producer.flush(5)
