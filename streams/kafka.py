"""Kafka client settings and the dead-letter producer (confluent-kafka).

Every client the worker builds starts from :func:`base_config`: the bootstrap servers plus the
``kafka:`` passthrough of the application settings (SASL, TLS, timeouts), so that production
security settings reach every client unchanged. Consumer-only keys are kept away from producers
(librdkafka warns about them otherwise) and the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sinks.kafka import DeliveryTracker, produce
from streams.errors import StreamsError

logger = logging.getLogger(__name__)

#: Group timing that works on the embedded broker and on Kafka (../shared/DESIGN.md: a join is held
#: for half the session timeout, so the librdkafka default of 45 s makes a join take ~23 s).
DEFAULT_GROUP_TIMING: Mapping[str, str] = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}

#: The header that carries why an event went to the dead-letter topic.
REASON_HEADER = "cutstream-reason"
#: Set on a dead letter whose key or value was cut (``key=<bytes>,value=<bytes>``, the original sizes).
TRUNCATED_HEADER = "cutstream-truncated"
#: Largest key + value a dead letter carries (bytes). The original message stays in its topic at the
#: offset the headers name; a larger copy could exceed the producer's or the broker's message size
#: limit (1 MB by default on both), and its failed delivery would stop the worker.
MAX_DEAD_LETTER_BYTES = 512 * 1024

_CONSUMER_ONLY_PREFIXES = (
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.",
    "fetch.",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "enable.partition.eof",
    "isolation.level",
    "queued.",
    "enable.auto.offset.store",
    "check.crcs",
    "max.partition.fetch.bytes",
)
_PRODUCER_ONLY_PREFIXES = (
    "partitioner",
    "linger.ms",
    "queue.buffering.",
    "batch.",
    "acks",
    "enable.idempotence",
    "compression.",
    "message.send.max.retries",
    "retries",
    "delivery.timeout.ms",
    "request.required.acks",
    "message.timeout.ms",
    "max.in.flight",
)


def base_config(
    bootstrap: str, passthrough: Mapping[str, str] | None = None, password: str | None = None
) -> dict[str, Any]:
    """Settings shared by every client: bootstrap servers, passthrough, ``sasl.password``."""
    cfg: dict[str, Any] = {"bootstrap.servers": bootstrap}
    cfg.update(passthrough or {})
    if password is not None:
        cfg["sasl.password"] = password
    return cfg


def consumer_config(
    bootstrap: str, group_id: str, passthrough: Mapping[str, str] | None = None, password: str | None = None
) -> dict[str, Any]:
    """A group consumer that never commits by itself and starts new groups at the beginning.

    ``enable.auto.commit=false``: the worker commits explicit offsets after its checkpoint.
    ``auto.offset.reset=earliest``: ``latest`` relies on end-offset lookups, which the embedded
    broker gets wrong (and a new group should see the whole topic anyway). With
    ``group.protocol=consumer`` (KIP-848, Apache Kafka 4) the group timing is the broker's.
    """
    cfg: dict[str, Any] = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,  # bounds the wait for a batch when traffic is low
        # a subscribed topic that is created after the worker started is seen within 10 s
        "topic.metadata.refresh.interval.ms": 10_000,
        **DEFAULT_GROUP_TIMING,
    }
    cfg.update(
        {
            k: v
            for k, v in base_config(bootstrap, passthrough, password).items()
            if not k.startswith(_PRODUCER_ONLY_PREFIXES)
        }
    )
    if cfg.get("group.protocol") == "consumer":
        # KIP-848: the broker owns session timeout, heartbeat and assignor; librdkafka refuses the
        # client-side keys, so our defaults go (a value set in `kafka:` stays and fails loudly)
        for key, default in DEFAULT_GROUP_TIMING.items():
            if cfg.get(key) == default and key not in (passthrough or {}):
                del cfg[key]
    return cfg


def incremental_rebalance(config: Mapping[str, Any]) -> bool:
    """True when the group's rebalances add and remove partitions one by one (``incremental_assign``):
    the KIP-848 consumer protocol and the cooperative-sticky assignor; False for eager ones."""
    return config.get("group.protocol") == "consumer" or "cooperative" in str(
        config.get("partition.assignment.strategy", "")
    )


def producer_config(
    bootstrap: str, passthrough: Mapping[str, str] | None = None, password: str | None = None
) -> dict[str, Any]:
    """An idempotent producer with the murmur2 partitioner (the same key→partition as Java clients)."""
    cfg: dict[str, Any] = {
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 5,
    }
    cfg.update(
        {
            k: v
            for k, v in base_config(bootstrap, passthrough, password).items()
            if not k.startswith(_CONSUMER_ONLY_PREFIXES)
        }
    )
    return cfg


def admin_config(
    bootstrap: str, passthrough: Mapping[str, str] | None = None, password: str | None = None
) -> dict[str, Any]:
    """An admin client's settings: the shared ones without consumer- or producer-only keys."""
    return {
        k: v
        for k, v in base_config(bootstrap, passthrough, password).items()
        if not k.startswith(_CONSUMER_ONLY_PREFIXES + _PRODUCER_ONLY_PREFIXES)
    }


#: The cluster id the Tansu broker reports unless told otherwise (the embedded one always does).
TANSU_CLUSTER_ID = "tansu_cluster"


def broker_is_tansu(
    bootstrap: str,
    passthrough: Mapping[str, str] | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> bool:
    """True when the cluster is a Tansu broker, whose end offsets and ``offsets_for_times`` are wrong.

    Everything else (Apache Kafka, Redpanda, managed Kafka) is trusted with them. A cluster that
    does not answer DescribeCluster is treated as Tansu: the cautious choice.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config(bootstrap, passthrough, password))
    try:
        cluster_id = admin.describe_cluster(request_timeout=timeout_s).result(timeout=timeout_s).cluster_id
    except (KafkaException, TimeoutError) as exc:
        logger.warning("DescribeCluster failed; treating the broker as Tansu error=%s", exc)
        return True
    return str(cluster_id or "").startswith("tansu")


class EndOffsets:
    """Partitions' end offsets from ListOffsets, asked in the background (never blocks the caller).

    :meth:`poll` returns what the last answer said and sends the next request once that answer
    came, so a worker that polls once a second sees end offsets at most about a second old.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(dict(config))
        self._pending: dict[Any, Any] | None = None
        self._known: dict[tuple[str, int], int] = {}

    def poll(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The latest end offset known of each of ``partitions`` (absent until the first answer)."""
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        if self._pending is not None and all(f.done() for f in self._pending.values()):
            for tp, fut in self._pending.items():
                try:
                    self._known[(tp.topic, tp.partition)] = int(fut.result().offset)
                except KafkaException as exc:
                    logger.debug(
                        "end offset unknown topic=%s partition=%d error=%s", tp.topic, tp.partition, exc
                    )
            self._pending = None
        if self._pending is None and partitions:
            self._pending = self._admin.list_offsets(
                {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},  # type: ignore[no-untyped-call]
                request_timeout=10,
            )
        return {tp: self._known[tp] for tp in partitions if tp in self._known}


@dataclass(frozen=True)
class BrokerFeatures:
    """What the worker uses of this broker: where lag comes from, and transactions."""

    end_offsets: EndOffsets | None  # the background end-offset reader; None: the fetch cache
    transactions: bool  # the results topic exactly-once through Kafka transactions


def broker_features(
    bootstrap: str,
    passthrough: Mapping[str, str] | None,
    password: str | None,
    settings: Any,
    *,
    embedded: bool,
) -> BrokerFeatures:
    """Where consumer lag comes from, whether ``--from`` can work and whether the results topic
    is exactly-once, on this broker.

    End offsets, ``offsets_for_times`` and transactions are used where the broker gets them right
    (not on Tansu, the embedded broker or a cluster whose id says so). ``settings``: ``lag_source``
    ("auto", "end_offsets" or "fetch_cache"), ``start_from_ms`` and ``results_guarantee`` ("auto",
    "exactly_once", "at_least_once"). ``auto`` on Tansu falls back to at-least-once and says so
    once, here.

    Raises:
        StreamsError: ``--from`` or ``results_guarantee: exactly_once`` on Tansu.
    """
    guarantee = settings.results_guarantee
    need_probe = (
        settings.lag_source == "auto" or settings.start_from_ms is not None or guarantee != "at_least_once"
    )
    tansu = embedded or (need_probe and broker_is_tansu(bootstrap, passthrough, password))
    if settings.start_from_ms is not None and tansu:
        raise StreamsError(
            "--from needs offsets_for_times, which the Tansu broker lacks (it answers with write "
            "times, not record timestamps): run against Apache Kafka, or start without --from"
        )
    if guarantee == "exactly_once" and tansu:
        raise StreamsError(
            "results_guarantee exactly_once needs Kafka transactions, which the Tansu broker lacks "
            "(aborted transactions are visible, fencing fails): run against Apache Kafka, or use "
            "--results-guarantee at_least_once (or auto)"
        )
    use_end = settings.lag_source == "end_offsets" or (settings.lag_source == "auto" and not tansu)
    logger.info("consumer lag source=%s", "end_offsets" if use_end else "fetch_cache")
    transactions = guarantee == "exactly_once" or (guarantee == "auto" and not tansu)
    if guarantee == "auto" and tansu:
        logger.warning(
            "results topic at-least-once: the broker is Tansu, whose transactions do not work "
            "(results_guarantee auto falls back; Parquet stays exactly-once)"
        )
    else:
        how = "exactly_once (Kafka transactions)" if transactions else "at_least_once"
        logger.info("results topic guarantee=%s", how)
    return BrokerFeatures(
        EndOffsets(admin_config(bootstrap, passthrough, password)) if use_end else None, transactions
    )


#: librdkafka's default transaction timeout; a worker's is at least 3 checkpoint intervals.
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
#: The broker's default ``transaction.max.timeout.ms`` (15 minutes): a longer timeout is refused.
MAX_TRANSACTION_TIMEOUT_MS = 900_000


def transactional_producer_config(
    bootstrap: str,
    passthrough: Mapping[str, str] | None,
    password: str | None,
    transactional_id: str,
    checkpoint_interval_s: float,
) -> dict[str, Any]:
    """A results producer of one input partition's transactions (see ``sinks.results_txn``).

    A transaction stays open from one checkpoint to the next, so its timeout is at least three
    checkpoint intervals (within the broker's 15-minute maximum) unless ``kafka:`` sets
    ``transaction.timeout.ms``.
    """
    timeout_ms = max(DEFAULT_TRANSACTION_TIMEOUT_MS, int(3 * checkpoint_interval_s * 1000))
    cfg = producer_config(bootstrap, passthrough, password)
    cfg["transactional.id"] = transactional_id
    cfg.setdefault("transaction.timeout.ms", min(timeout_ms, MAX_TRANSACTION_TIMEOUT_MS))
    return cfg


def transactional_id(group_id: str, topic: str, partition: int) -> str:
    """One input partition's ``transactional.id``: the same for every worker of the group, so that
    the next owner of the partition fences the previous one."""
    return f"cutstream-{group_id}-{topic}-{partition}"


def consumer_lag(
    consumer: Any, progress: Mapping[tuple[str, int], Any], end_offsets: EndOffsets | None
) -> dict[tuple[str, int], int]:
    """Per partition (``progress``: its ``next_offset``), the end offset minus the next offset.

    End offsets come from ListOffsets in the background (:class:`EndOffsets`); without one (Tansu,
    whose ListOffsets answers are stale) from the high watermark cached by the last fetch.
    """
    from confluent_kafka import KafkaException, TopicPartition

    lag: dict[tuple[str, int], int] = {}
    if consumer is None:
        return lag
    ends = end_offsets.poll(list(progress)) if end_offsets is not None else None
    for tp, p in progress.items():
        if p.next_offset is None:
            continue
        if ends is not None:
            if tp in ends:
                lag[tp] = max(ends[tp] - p.next_offset, 0)
            continue
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        except KafkaException:
            continue
        if high is not None and high >= 0:
            lag[tp] = max(int(high) - p.next_offset, 0)
    return lag


def offsets_for_time(
    consumer: Any, partitions: Sequence[tuple[str, int]], time_ms: int
) -> dict[tuple[str, int], int]:
    """Per partition, the first offset whose record timestamp is at or after ``time_ms``.

    A partition with no such record gets its end offset (``OFFSET_END``): it starts with the next
    event produced. Needs a broker whose ListOffsets reads record timestamps (not Tansu).
    """
    from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

    try:
        found = consumer.offsets_for_times([TopicPartition(t, p, time_ms) for t, p in partitions], timeout=10)
    except KafkaException as exc:
        raise StreamsError(f"offsets_for_times failed for --from: {exc}") from exc
    return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found}


def ensure_topics(
    bootstrap: str,
    topics: Sequence[str],
    partitions: int,
    passthrough: Mapping[str, str] | None = None,
    password: str | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (``partitions`` each); return the ones created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(admin_config(bootstrap, passthrough, password))
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
    )
    for topic, fut in futures.items():
        try:
            fut.result(timeout=10)
        except KafkaException as exc:
            raise StreamsError(f"cannot create topic {topic}: {exc}") from exc
        logger.info("topic created topic=%s partitions=%d", topic, partitions)
    return missing


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of an events topic."""
    return f"{topic}.dlq"


class DeadLetterProducer:
    """Sends rejected input to ``<topic>.dlq``: the original key and value, the reason in a header.

    Headers: ``cutstream-reason`` (e.g. ``invalid_json``, ``missing_timestamp``, ``late``),
    ``cutstream-detector``, and where the event came from: ``cutstream-topic``,
    ``cutstream-partition``, ``cutstream-offset``; ``cutstream-truncated`` when the key and value
    together were longer than :data:`MAX_DEAD_LETTER_BYTES` and were cut to fit.
    """

    def __init__(self, producer: Any, tracker: DeliveryTracker) -> None:
        self._producer = producer
        self._tracker = tracker

    def send(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detector: str,
    ) -> None:
        headers = [
            (REASON_HEADER, reason.encode()),
            ("cutstream-detector", detector.encode()),
            ("cutstream-topic", topic.encode()),
            ("cutstream-partition", str(partition).encode()),
            ("cutstream-offset", str(offset).encode()),
        ]
        n_key, n_value = len(key or b""), len(value or b"")
        if n_key + n_value > MAX_DEAD_LETTER_BYTES:
            # the key first keeps what it can (it routes and names the series), the value the rest
            key = key[:MAX_DEAD_LETTER_BYTES] if key is not None else None
            if value is not None:
                value = value[: MAX_DEAD_LETTER_BYTES - len(key or b"")]
            headers.append((TRUNCATED_HEADER, f"key={n_key},value={n_value}".encode()))
        produce(self._producer, dlq_topic(topic), value, key, headers=headers, on_delivery=self._tracker)
