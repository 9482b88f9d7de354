"""`cutstream replay` against the embedded broker: every valid row arrives once, with its event time,
keyed by its dimensions — also when the replay is interrupted and resumed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from streams.config import DetectorSpec
from streams.replay import HEADER, replay
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SPEC = DetectorSpec(
    name="shop",
    topic="orders",
    timestamp_field="ts",
    dimensions=("item",),
    measures=({"field": "qty", "aggregation": "sum"},),
)


def _write_history(path: Path, n: int) -> None:
    lines = ["ts,item,qty"]
    for i in range(n):
        lines.append(f"{1767225600000 + i * 1000},{'AB'[i % 2]},{i}")
    lines.insert(5, "garbage,A,1")  # a bad row: reported, skipped
    path.write_text("\n".join(lines) + "\n")


def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(2)])
    got: list = []
    wait_for(
        lambda: got.extend(m for m in c.consume(1000, 0.2) if not m.error()) or len(got) >= expected,
        timeout_s=30,
        message=f"{expected} replayed events",
    )
    # anything beyond `expected` would be a duplicate: read once more to see it
    got.extend(m for m in c.consume(1000, 1.0) if not m.error())
    c.close()
    return got


@pytest.mark.brokers("tansu", "kafka")
def test_interrupted_replay_resumes_without_duplicates(tmp_path: Path, bootstrap: str, topic_factory) -> None:
    topic = topic_factory("replay", partitions=2)
    history = tmp_path / "history.csv"
    _write_history(history, 3000)
    state = tmp_path / "pos.json"
    stop = threading.Event()
    first = replay(
        history,
        SPEC,
        bootstrap,
        topic,
        state_file=state,
        progress=False,
        stop=stop,
        chunk_rows=1000,
        on_chunk=lambda sent: stop.set(),
    )
    assert not first.completed and 0 < first.sent < 3000
    assert [(b.row, b.line) for b in first.bad] == [(5, 6)]  # the 5th row, on line 6
    second = replay(history, SPEC, bootstrap, topic, state_file=state, progress=False, chunk_rows=1000)
    assert second.completed and second.resumed_from is not None
    assert first.sent + second.sent == 3000
    msgs = _read_all(bootstrap, topic, 3000)
    rows = [dict(m.headers())[HEADER] for m in msgs]
    assert len(rows) == len(set(rows)) == 3000
    events = sorted((json.loads(m.value()) for m in msgs), key=lambda e: e["ts"])
    assert [e["qty"] for e in events] == [float(i) for i in range(3000)]
    # a series always lands on one partition
    parts = {}
    for m in msgs:
        parts.setdefault(m.key(), set()).add(m.partition())
    assert set(parts) == {b"item=A", b"item=B"} and all(len(p) == 1 for p in parts.values())


def test_a_paced_replay_shows_its_progress_inside_a_chunk_with_the_event_time(
    tmp_path: Path, bootstrap: str, topic_factory
) -> None:
    """At 1000x real time, 3,000 one-second rows take 3 s in one chunk: the bar moves within it."""
    import io
    import re

    topic = topic_factory("replaybar", partitions=2)
    history = tmp_path / "history.csv"
    _write_history(history, 3000)
    out = io.StringIO()
    report = replay(history, SPEC, bootstrap, topic, speed=1000.0, chunk_rows=100_000, progress_file=out)
    assert report.completed and report.sent == 3000  # and one bad row, reported
    text = out.getvalue()
    done = [round(float(n) * (1000 if k else 1)) for n, k in re.findall(r"\| *([\d.]+)(k?)/3\.00k", text)]
    partial = sorted({n for n in done if 0 < n < 3000})
    assert len(partial) >= 2, text[-2000:]  # more than one update before the chunk ended
    assert "event time 2026-01-01 00:" in text


def test_replay_from_a_time_leaves_out_the_rows_before_it(
    tmp_path: Path, bootstrap: str, topic_factory
) -> None:
    """``--from`` filters rows by event time (no offset lookup: it works on every broker)."""
    topic = topic_factory("replayfrom", partitions=2)
    history = tmp_path / "history.csv"
    _write_history(history, 200)
    start_ms = 1767225600000 + 150 * 1000
    report = replay(history, SPEC, bootstrap, topic, progress=False, start_ms=start_ms)
    assert report.completed and report.sent == 50 and report.skipped_before_from == 150
    msgs = _read_all(bootstrap, topic, 50)
    events = sorted((json.loads(m.value()) for m in msgs), key=lambda e: e["ts"])
    assert [e["qty"] for e in events] == [float(i) for i in range(150, 200)]


def test_cli_reports_bad_rows_and_exits_nonzero(tmp_path: Path, bootstrap: str, topic_factory) -> None:
    topic = topic_factory("replaycli")
    history = tmp_path / "history.csv"
    _write_history(history, 20)
    config = tmp_path / "detectors.yaml"
    config.write_text(json.dumps({"detectors": [SPEC.model_dump(mode="json")]}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cutstream",
            "replay",
            str(history),
            "--topic",
            topic,
            "--config",
            str(config),
            "--brokers",
            bootstrap,
            "--as-fast-as-possible",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "history.csv:6: bad timestamp" in proc.stderr and "garbage" in proc.stderr  # line 6 of the file
    assert "20 events" in proc.stdout


def test_replay_killed_mid_chunk_resumes_without_duplicates(
    tmp_path: Path, bootstrap: str, topic_factory
) -> None:
    """kill -9 while events of an unrecorded chunk are already in the topic: the resumed replay
    finds them by their replay header and does not send them again."""
    import signal

    from confluent_kafka import Consumer, TopicPartition

    topic = topic_factory("replaykill", partitions=2)
    history = tmp_path / "history.csv"
    _write_history(history, 3000)
    config = tmp_path / "detectors.yaml"
    config.write_text(json.dumps({"detectors": [SPEC.model_dump(mode="json")]}))
    cmd = [
        sys.executable,
        "-m",
        "cutstream",
        "replay",
        str(history),
        "--topic",
        topic,
        "--config",
        str(config),
        "--brokers",
        bootstrap,
        "--no-progress",
    ]
    proc = subprocess.Popen([*cmd, "--speed", "1500"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(2)])
    seen: list = []
    wait_for(
        lambda: seen.extend(m for m in c.consume(1000, 0.1) if not m.error()) or len(seen) >= 1000,
        timeout_s=60,
        message="the first 1000 events",
    )
    c.close()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    done = subprocess.run([*cmd, "--as-fast-as-possible"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr  # the garbage row is still reported
    assert "resumed" in done.stdout
    msgs = _read_all(bootstrap, topic, 3000)
    rows = [dict(m.headers())[HEADER] for m in msgs]
    assert len(rows) == len(set(rows)) == 3000
