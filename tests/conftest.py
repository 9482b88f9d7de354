"""Shared fixtures: the brokers (one of each kind per test process) and factories for topics and groups.

``broker`` is the embedded Tansu broker unless a test asks for others with the ``brokers`` marker:
``@pytest.mark.brokers("tansu", "kafka")`` runs it once on each (ids ``[tansu]``, ``[kafka]``);
``@pytest.mark.brokers("kafka")`` runs it on Apache Kafka only (a feature Tansu lacks). The Kafka
broker starts on first use in a process; its tests share one xdist group, so one JVM serves them.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_NAB = Path(__file__).resolve().parents[1].parent / "shared" / "nab"

#: Client settings that make group joins on the embedded broker take ~1 s (see ../shared/DESIGN.md).
FAST_GROUP = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "500"}


BROKER_KINDS = ("tansu", "kafka")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is None or "broker" not in metafunc.fixturenames:
        return
    kinds = marker.args or BROKER_KINDS
    unknown = set(kinds) - set(BROKER_KINDS)
    if unknown:
        raise pytest.UsageError(f"unknown broker kinds {sorted(unknown)}; choose from {BROKER_KINDS}")
    metafunc.parametrize("broker", kinds, indirect=True, ids=str)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on Apache Kafka share one xdist group: one JVM per run instead of one per worker."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("broker") == "kafka":
            item.add_marker(pytest.mark.xdist_group("kafka"))


@pytest.fixture(scope="session")
def tansu_broker() -> Iterator[Any]:
    """A real Tansu broker on a free loopback port, shared by the tests of this process."""
    from streams.broker import EmbeddedBroker

    b = EmbeddedBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Any]:
    """Apache Kafka (KRaft, one node) on free loopback ports, shared by the tests of this process."""
    from streams.broker import KafkaBroker

    b = KafkaBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Any:
    """The broker this test runs on: Tansu by default, each kind of its ``brokers`` marker otherwise."""
    kind = getattr(request, "param", "tansu")
    return request.getfixturevalue(f"{kind}_broker")


@pytest.fixture
def broker_kind(broker: Any) -> str:
    """``"tansu"`` or ``"kafka"``."""
    return str(broker.kind)


@pytest.fixture
def bootstrap(broker: Any) -> str:
    return str(broker.bootstrap)


_counter = itertools.count()


@pytest.fixture
def topic_factory(bootstrap: str) -> Callable[..., str]:
    """Create a fresh topic (unique name) and return its name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout=10)
        return name

    return make


@pytest.fixture
def group_factory() -> Callable[[], str]:
    return lambda: f"g-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


def _gpu_usable() -> bool:
    from detector.backend import get_backend
    from detector.errors import BackendUnavailable

    try:
        get_backend("gpu")
    except BackendUnavailable:
        return False
    return True


#: For tests that need a CUDA device (mark them ``gpu`` too); CI has none.
needs_gpu = pytest.mark.skipif(not _gpu_usable(), reason="no usable CUDA GPU here")


def wait_for(
    condition: Callable[[], Any],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns a truthy value or the deadline passes (no bare sleeps)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


@pytest.fixture
def nab_dir() -> Path:
    """../shared/nab; tests that need it skip cleanly where it is absent."""
    if not (SHARED_NAB / "data").is_dir():
        pytest.skip("../shared/nab is not present")
    return SHARED_NAB
