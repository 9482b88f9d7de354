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


@pytest.mark.brokers("tansu", "kafka")
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


@pytest.mark.parametrize("kind", ["EmbeddedBroker", pytest.param("KafkaBroker", marks=pytest.mark.slow)])
def test_broker_dies_with_a_killed_parent(tmp_path, kind: str) -> None:
    """kill -9 of the process that started the broker leaves no orphan broker behind (and the next
    Kafka broker started removes the dead one's log directory)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from streams.broker import {kind}
        b = {kind}().start()
        print(b.pid, getattr(b, "_dir", None) or "", flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid_text, _, workdir = parent.stdout.readline().strip().partition(" ")
    broker_pid = int(pid_text)
    assert _alive(broker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    wait_for(lambda: not _alive(broker_pid), timeout_s=30, message="the orphaned broker to exit")
    if kind == "KafkaBroker":
        from pathlib import Path

        from streams.broker import _remove_orphaned_workdirs

        assert Path(workdir).is_dir()
        _remove_orphaned_workdirs()  # what KafkaBroker.start does first
        assert not Path(workdir).exists()


@pytest.mark.brokers("kafka")
def test_kafka_broker_is_apache_kafka_in_kraft_mode(broker) -> None:
    """The test broker is the real thing: KRaft controller and broker in one node, the pinned version."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from streams.broker import KAFKA_VERSION

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    cluster = admin.describe_cluster().result(timeout=10)
    assert len(cluster.nodes) == 1 and not cluster.cluster_id.startswith("tansu")
    (future,) = admin.describe_configs([ConfigResource("broker", str(cluster.nodes[0].id))]).values()
    configs = future.result(timeout=10)
    assert configs["process.roles"].value == "broker,controller"
    assert configs["group.min.session.timeout.ms"].value == "1000"  # the tests' 2 s sessions are allowed
    jars = {p.name for p in broker_lib()}
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in jars and f"kafka-clients-{KAFKA_VERSION}.jar" in jars


def broker_lib():
    from streams.broker import kafka_lib_dir

    return list(kafka_lib_dir().glob("*.jar"))


def test_cli_broker_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cutstream", "broker"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "bootstrap.servers=127.0.0.1:" in line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
