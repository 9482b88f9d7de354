"""Client settings: the KIP-848 consumer protocol leaves the group timing to the broker."""

from __future__ import annotations

from streams.kafka import DEFAULT_GROUP_TIMING, consumer_config, incremental_rebalance


def test_classic_groups_get_the_fast_timing_and_eager_assignment() -> None:
    cfg = consumer_config("b:9092", "g")
    assert {k: cfg[k] for k in DEFAULT_GROUP_TIMING} == dict(DEFAULT_GROUP_TIMING)
    assert not incremental_rebalance(cfg)


def test_the_consumer_protocol_drops_the_client_side_timing_and_assigns_incrementally() -> None:
    cfg = consumer_config("b:9092", "g", {"group.protocol": "consumer"})
    assert not set(DEFAULT_GROUP_TIMING) & set(cfg)
    assert incremental_rebalance(cfg)


def test_a_timing_set_by_the_operator_is_passed_on_for_librdkafka_to_judge() -> None:
    cfg = consumer_config("b:9092", "g", {"group.protocol": "consumer", "session.timeout.ms": "6000"})
    assert cfg["session.timeout.ms"] == "6000" and "heartbeat.interval.ms" not in cfg


def test_the_cooperative_sticky_assignor_is_incremental_too() -> None:
    cfg = consumer_config("b:9092", "g", {"partition.assignment.strategy": "cooperative-sticky"})
    assert incremental_rebalance(cfg) and cfg["session.timeout.ms"] == "6000"
