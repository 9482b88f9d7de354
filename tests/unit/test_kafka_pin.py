"""The Apache Kafka of the tests is the one compose.yaml runs: one version, pinned in three places."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_test_broker_pom_and_compose_name_one_kafka_version() -> None:
    from streams.broker import KAFKA_VERSION

    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    (pom_version,) = re.findall(r"<kafka.version>([^<]+)</kafka.version>", pom)
    compose_versions = set(re.findall(r"image: apache/kafka:(\S+)", (REPO / "compose.yaml").read_text()))
    assert re.fullmatch(r"\d+\.\d+\.\d+", KAFKA_VERSION)
    assert pom_version == KAFKA_VERSION
    assert compose_versions == {KAFKA_VERSION}


def test_kafka_lib_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    from streams.broker import kafka_lib_dir

    monkeypatch.delenv("CUTSTREAM_KAFKA_LIB", raising=False)
    assert kafka_lib_dir("9.9.9") == REPO / ".kafka" / "9.9.9" / "lib"
    monkeypatch.setenv("CUTSTREAM_KAFKA_LIB", str(tmp_path))
    assert kafka_lib_dir() == tmp_path


def test_cluster_ids_never_look_like_an_option(monkeypatch) -> None:
    """A KRaft cluster id that starts with '-' made kafka-storage format fail (seen in a suite run)."""
    import uuid

    from streams import broker

    # the first draw encodes to "-AAAA...": it must be drawn again
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    assert broker._kafka_cluster_id() == "A" * 22
