"""Hostile input against a live worker on the real embedded broker.

A hand-made corpus (malformed Unicode, deep nesting, huge strings and numbers, extreme timestamps,
non-object JSON, binary garbage, oversized keys and headers), seeded mutations of it, and
hypothesis-generated events go to one partition while a worker runs. The worker never exits, and
every message is either processed (taken into a window) or on the dead-letter topic with a known
reason: produced = processed + dead-lettered, exactly. ``CUTSTREAM_FUZZ_SECONDS=N`` turns on the
soak (``make fuzz``): the mutator for N seconds against one worker, with figures at the end.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FAST_GROUP, wait_for
from tests.integration.fuzz_corpus import WINDOW_MS, Hostile, corpus, known_reason, mutator

pytestmark = pytest.mark.integration

REASON = "cutstream-reason"


def _app(bootstrap: str, topic: str, group: str, data_dir: Any) -> Any:
    from cutstream.config import AppConfig
    from detector.config import ForestConfig, ModelConfig, ScoringConfig
    from streams.config import DetectorSpec, MeasureSpec

    spec = DetectorSpec(
        name="fuzz",
        topic=topic,
        timestamp_field="ts",
        dimensions=("host",),
        measures=(MeasureSpec(field="value", aggregation="sum", missing="skip"),),
        window_ms=WINDOW_MS,
        idle_timeout_ms=1_000,
        model=ModelConfig(
            forest=ForestConfig(n_trees=5, sample_size=32, shingle_size=1, seed=3),
            scoring=ScoringConfig(learning_points=4, learning_ms=0),
        ),
    )
    return AppConfig(
        brokers=bootstrap,
        data_dir=data_dir,
        group_id=group,
        kafka=dict(FAST_GROUP),
        results_topic=f"{topic}.results",
        detectors=(spec,),
    )


class LiveWorker:
    """A worker running in a thread; whatever it raises is kept (the test fails on it)."""

    def __init__(self, app: Any) -> None:
        from streams.worker import Worker

        self.worker = Worker(app)
        self.pipe = self.worker.pipelines["fuzz"]
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as exc:  # kept for the test to report
            self.error = exc

    def processed(self) -> int:
        """Events taken into a window, every partition."""
        return sum(self.pipe.windows(tp).counters["accepted"] for tp in self.pipe.partitions())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, repr(self.error)


class Account:
    """What was produced to the partition, and what came back on its dead-letter topic."""

    def __init__(self, bootstrap: str, topic: str, keep_values: bool = True) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient, NewTopic

        self.topic = topic
        # the dead-letter topic exists before the reader is assigned to it
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(f"{topic}.dlq", num_partitions=1, replication_factor=1)])[
            f"{topic}.dlq"
        ].result(timeout=10)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000, "linger.ms": 5}
        )
        self.dlq = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "fuzz-reader", "enable.auto.commit": False}
        )
        self.dlq.assign([TopicPartition(f"{topic}.dlq", 0, 0)])
        self.produced = 0
        self.expected: dict[int, str | None] = {}  # offset → reason (corpus entries only)
        self.dead: dict[int, dict[str, bytes]] = {}  # offset → headers of its dead letter
        self.values: dict[int, bytes | None] = {}
        self.keep_values = keep_values

    def send(self, items: list[Hostile]) -> list[int]:
        offsets: list[int] = []

        def on_delivery(err: Any, msg: Any) -> None:
            assert err is None, err
            offsets.append(msg.offset())

        for h in items:
            self.producer.produce(
                self.topic, h.value, h.key, partition=0, headers=list(h.headers), on_delivery=on_delivery
            )
            self.producer.poll(0)
        assert self.producer.flush(30) == 0
        assert len(offsets) == len(items)
        self.produced += len(items)
        return offsets

    def read_dead_letters(self, expected_total: int) -> None:
        def more() -> bool:
            for m in self.dlq.consume(500, 0.2):
                if m.error():
                    continue
                headers = dict(m.headers() or [])
                offset = int(headers["cutstream-offset"])
                assert offset not in self.dead, f"offset {offset} dead-lettered twice"
                self.dead[offset] = headers if self.keep_values else {REASON: headers[REASON]}
                if self.keep_values:
                    self.values[offset] = m.value()
            return len(self.dead) >= expected_total

        wait_for(more, timeout_s=60, message=f"{expected_total} dead letters (got {len(self.dead)})")

    def settle(self, live: LiveWorker) -> None:
        """Wait until the worker has read everything, then for its dead letters; check the sum."""
        wait_for(
            lambda: live.worker.counters().events_in >= self.produced or live.error is not None,
            timeout_s=60,
            message=f"the worker to read {self.produced} events",
        )
        assert live.error is None, repr(live.error)
        assert live.thread.is_alive(), "the worker exited"
        assert live.worker.counters().events_in == self.produced
        processed = live.processed()
        self.read_dead_letters(self.produced - processed)
        assert processed + len(self.dead) == self.produced
        for headers in self.dead.values():
            assert known_reason(headers["cutstream-reason"].decode()), headers


@pytest.fixture
def fuzz_setup(bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any) -> Any:
    topic = topic_factory("fuzz", partitions=1)
    live = LiveWorker(_app(bootstrap, topic, group_factory(), tmp_path))
    account = Account(bootstrap, topic)
    try:
        yield live, account
    finally:
        account.dlq.close()
        live.stop.set()
        live.thread.join(60)


def _base_ms() -> int:
    """An hour behind the wall clock, on a window boundary: current for the live future guard."""
    return (int(time.time() * 1000) - 3_600_000) // WINDOW_MS * WINDOW_MS


# -- hypothesis events: ts, host and value of any JSON type, sometimes absent ----------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from([10**400, 1e300, 1.1e300, "\ud800", "x" * 1025, "é" * 600]),
)
_values = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=5,
)


@st.composite
def _events(draw: st.DrawFn, base_ms: int) -> bytes | None:
    import json

    if draw(st.integers(0, 9)) == 0:
        return draw(st.none() | st.binary(max_size=60))
    obj: dict[str, object] = {}
    ts = st.integers(base_ms - 20_000, base_ms + 60_000) | st.sampled_from(
        [base_ms + 3 * 86_400_000, -62_135_596_800_000, 253_402_300_799_999, "9999-12-31T23:59:59Z"]
    )
    for name, strategy in (
        ("ts", ts | _values),
        ("host", st.text(max_size=6) | _values),
        ("value", st.floats() | _values),
    ):
        if draw(st.integers(0, 9)) > 0:
            obj[name] = draw(strategy)
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def test_hostile_events_never_stop_the_worker_and_each_is_processed_or_dead_lettered(fuzz_setup: Any) -> None:
    from streams.parse import parse_event

    live, account = fuzz_setup
    base = _base_ms()

    # ---- the corpus: each entry gets exactly the reason it names
    items = corpus(base)
    offsets = account.send(items)
    account.settle(live)
    for h, offset in zip(items, offsets, strict=True):
        got = account.dead.get(offset)
        assert (got["cutstream-reason"].decode() if got else None) == h.reason, (
            offset,
            h.value and h.value[:80],
        )
    big = [
        o
        for o, h in zip(offsets, items, strict=True)
        if h.reason and len(h.value or b"") + len(h.key or b"") > 512 * 1024
    ]
    assert big and all("cutstream-truncated" in account.dead[o] for o in big)
    assert all(len(account.values[o] or b"") <= 512 * 1024 for o in big)

    # ---- seeded mutations of the corpus
    mutate = mutator(seed=15, base_ms=base)
    account.send([Hostile(mutate(), None) for _ in range(2_000)])
    account.settle(live)

    # ---- hypothesis: the reason of every event the parser refuses is the reference's
    spec = live.pipe.spec

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(_events(base), min_size=1, max_size=30))
    def check(raws: list[bytes | None]) -> None:
        offs = account.send([Hostile(r, None) for r in raws])
        account.settle(live)
        for raw, offset in zip(raws, offs, strict=True):
            ref = parse_event(raw, spec)
            got = account.dead.get(offset)
            if isinstance(ref, str):
                assert got is not None and got["cutstream-reason"].decode() == ref, (raw, ref)
            elif got is not None:  # valid JSON the window stage refused
                assert got["cutstream-reason"].decode() in {"late", "future_timestamp", "bad_timestamp"}

    check()
    counters = live.worker.counters()
    assert counters.results_produced > 0  # the valid events were scored all along
    live.close()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CUTSTREAM_FUZZ_SECONDS"), reason="the soak: make fuzz")
def test_soak_mutated_events_against_a_live_worker(fuzz_setup: Any) -> None:
    """``make fuzz``: the mutator for CUTSTREAM_FUZZ_SECONDS against one worker; figures printed."""
    live, account = fuzz_setup
    account.keep_values = False  # hundreds of thousands of dead letters: keep their reasons only
    seconds = float(os.environ["CUTSTREAM_FUZZ_SECONDS"])
    seed = int(os.environ.get("CUTSTREAM_FUZZ_SEED", "15"))
    start = time.monotonic()
    base = _base_ms() - 3 * 86_400_000  # room for the rounds to move on, behind the wall clock
    rounds = 0
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    while time.monotonic() - start < seconds:
        # each round two minutes of event time later: mutations, then the corpus after them
        round_base = base + rounds * 120_000
        mutate = mutator(seed=seed + rounds, base_ms=round_base)
        account.send([Hostile(mutate(), None) for _ in range(5_000)] + corpus(round_base + 61_000))
        account.settle(live)
        rounds += 1
    elapsed = time.monotonic() - start
    reasons = Counter(h["cutstream-reason"].decode() for h in account.dead.values())
    counters = live.worker.counters()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nfuzz soak: {elapsed:.0f} s, seed {seed}, {rounds} rounds, produced {account.produced}, "
        f"processed {live.processed()}, dead-lettered {len(account.dead)} "
        f"({account.produced / elapsed:.0f} events/s), windows scored {counters.windows_closed}, "
        f"results {counters.results_produced}, series registered {len(live.pipe.parser.registry)}, "
        f"worker exits 0, peak RSS of the test process (worker, producer, reader) {rss_start:.0f} -> "
        f"{rss_mb:.0f} MB\ndead letters by reason: {dict(reasons.most_common())}"
    )
    assert live.processed() + len(account.dead) == account.produced
    live.close()
