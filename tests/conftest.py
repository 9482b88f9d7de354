"""Shared fixtures: the embedded broker (one per test process) and factories for topics and groups."""

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


@pytest.fixture(scope="session")
def broker() -> Iterator[Any]:
    """A real Tansu broker on a free loopback port, shared by the tests of this process."""
    from streams.broker import EmbeddedBroker

    b = EmbeddedBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


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
