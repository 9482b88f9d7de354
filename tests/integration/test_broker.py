"""The embedded broker: starts, answers produce/consume, and stops without leaving a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_produce_and_consume_roundtrip(bootstrap: str, topic_factory) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = topic_factory("roundtrip")
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(10):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    wait_for(lambda: got.extend(m.value() for m in c.consume(100, 0.2) if not m.error()) or len(got) >= 10)
    c.close()
    assert got == [f"v{i}".encode() for i in range(10)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_broker_dies_with_a_killed_parent(tmp_path) -> None:
    """kill -9 of the process that started the broker leaves no orphan broker behind."""
    script = textwrap.dedent(
        """
        import sys, time
        from streams.broker import EmbeddedBroker
        b = EmbeddedBroker().start()
        print(b.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    broker_pid = int(parent.stdout.readline())
    assert _alive(broker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    wait_for(lambda: not _alive(broker_pid), timeout_s=15, message="the orphaned broker to exit")


def test_cli_broker_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cutstream", "broker"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "bootstrap.servers=127.0.0.1:" in line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
