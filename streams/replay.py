"""`cutstream replay`: publish history into Kafka with its original event times.

Events are the ones `streams.history` makes of each row (the worker cannot tell them from live
ones), keyed by their dimension values. ``speed`` N replays N times faster than real time,
keeping the gaps between events; ``None`` sends as fast as the broker takes them.

Resuming without duplicates: every event carries a ``cutstream-replay`` header
(``<file index>:<row>``), and a position file records, after each flushed chunk, the next row to
send and the end offset of every partition written so far. A replay that was interrupted starts
from the recorded position, first reading the topic from the recorded offsets to the end, so that
a chunk that reached the broker after the last recorded position is not sent twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sinks.kafka import produce
from sinks.storage import writing
from streams.config import DetectorSpec
from streams.errors import StreamsError
from streams.history import BadRow, HistoryBatch, count_rows, history_files, read_history
from streams.state import REPLAY_POSITION, StateVersionError

logger = logging.getLogger(__name__)

HEADER = "cutstream-replay"
STATE_VERSION = REPLAY_POSITION.current


@dataclass
class ReplayReport:
    sent: int = 0
    skipped_already_sent: int = 0
    skipped_before_from: int = 0
    bad: list[BadRow] = field(default_factory=list)
    resumed_from: tuple[int, int] | None = None
    completed: bool = False
    #: an earlier replay had sent everything already: nothing was read (its position file says so)
    already_complete: bool = False
    state_file: Path | None = None


def _load_state(state_file: Path, path: Path, topic: str) -> dict[str, Any] | None:
    if not state_file.exists():
        return None
    try:
        state = REPLAY_POSITION.upgrade(json.loads(state_file.read_text()), hint="; delete it to start over")
    except StateVersionError as exc:
        raise StreamsError(f"{state_file}: {exc}") from exc
    if state.get("path") != str(path) or state.get("topic") != topic:
        raise StreamsError(
            f"{state_file} belongs to a replay of {state.get('path')} into {state.get('topic')}; "
            "use another --state-file or delete it"
        )
    return state


def _save_state(state_file: Path, state: dict[str, Any]) -> None:
    tmp = state_file.with_name(f".{state_file.name}.tmp")
    with writing(state_file, "replay position file", tmp):
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_file)


def _already_sent(
    bootstrap: str, topic: str, offsets: dict[str, int], extra: dict[str, str], quiet_s: float = 2.0
) -> set[tuple[int, int]]:
    """Replay positions present in ``topic`` from ``offsets`` on (partition → next offset).

    Reads until a whole ``quiet_s`` passes with no message: nothing else writes these headers, and
    the interrupted replay that wrote them is gone. End-offset lookups are not used (the embedded
    broker answers them with stale values).
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cutstream-replay-resume",
            "enable.auto.commit": "false",
            **extra,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        consumer.close()
        return set()
    consumer.assign([TopicPartition(topic, p, offsets.get(str(p), 0)) for p in meta.partitions])
    seen: set[tuple[int, int]] = set()
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        msgs = consumer.consume(10_000, 0.2)
        for m in msgs:
            if m.error():
                continue
            last = time.monotonic()
            headers = m.headers()
            # A consumed message carries its headers as a list of (key, bytes or None) pairs, or None;
            # the stub's type also admits the dict and str forms that a producer accepts.
            if not isinstance(headers, list):
                continue
            for k, v in headers:
                if k == HEADER and isinstance(v, bytes) and v:
                    fi, row = v.decode().split(":")
                    seen.add((int(fi), int(row)))
    consumer.close()
    return seen


class _Sender:
    """One replay's producer, pacing, delivered offsets and progress bar."""

    def __init__(
        self, bootstrap: str, topic: str, extra: dict[str, str], offsets: dict[str, int], speed: float | None
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.speed = speed
        self.offsets = offsets
        self.start_ms: int | None = None  # rows before this event time are left out (--from)
        self.errors: list[str] = []
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "partitioner": "murmur2_random",
                "enable.idempotence": "true",
                "linger.ms": "20",
                **extra,
            }
        )
        self._wall0: float | None = None
        self._event0 = 0
        self.bar: Any = None  # the progress bar, advanced inside a chunk too (a paced chunk is slow)
        self._shown = 0  # rows of the current chunk already counted on the bar
        self._shown_at = 0.0

    def delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        key = str(msg.partition())
        self.offsets[key] = max(self.offsets.get(key, 0), msg.offset() + 1)

    def pace(self, ts: int, stop: threading.Event | None) -> None:
        """With a speed, wait until event time ``ts`` is due (gaps kept at ``speed`` x real time)."""
        if not self.speed:
            return
        if self._wall0 is None:
            self._wall0, self._event0 = time.monotonic(), ts
        delay = self._wall0 + (ts - self._event0) / 1000.0 / self.speed - time.monotonic()
        if delay > 0:
            self.producer.poll(0)
            (stop.wait(delay) if stop is not None else time.sleep(delay))

    def send_chunk(
        self,
        batch: HistoryBatch,
        sent_before: set[tuple[int, int]],
        report: ReplayReport,
        stop: threading.Event | None,
    ) -> bool:
        """Send one chunk's events (skipping those already in the topic); False when stopped."""
        keys, values = batch.events()
        self._shown = 0
        for done, (row, ts, key, value) in enumerate(
            zip(batch.rows.tolist(), batch.timestamps_ms.tolist(), keys, values, strict=True)
        ):
            if stop is not None and stop.is_set():
                return False
            self._show(done, ts)
            if (batch.file_index, row) in sent_before:
                report.skipped_already_sent += 1
                continue
            if self.start_ms is not None and ts < self.start_ms:
                report.skipped_before_from += 1
                continue
            self.pace(ts, stop)
            headers = [(HEADER, f"{batch.file_index}:{row}".encode())]
            produce(self.producer, self.topic, value, key, headers=headers, on_delivery=self.delivered)
            report.sent += 1
        return True

    def _show(self, done: int, ts: int) -> None:
        """Advance the bar to ``done`` rows of this chunk, with the event time reached (twice a second)."""
        now = time.monotonic()
        if self.bar is None or now - self._shown_at < 0.5:
            return
        self._shown_at = now
        self.bar.update(done - self._shown)
        self._shown = done
        self.bar.set_postfix_str(f"event time {_iso(ts)}", refresh=False)

    def end_chunk(self, rows: int) -> None:
        """Count the rest of a chunk (``rows``: its rows, bad ones included) on the bar."""
        if self.bar is not None:
            self.bar.update(rows - self._shown)
        self._shown = 0

    def flush(self) -> None:
        """Wait until the chunk is in the topic; raise if some of it is not."""
        remaining = self.producer.flush(60)
        if remaining or self.errors:
            raise StreamsError(f"replay: {remaining} events not delivered; errors: {self.errors[:3]}")


def _iso(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_ms / 1000.0))


def _progress_bar(files: list[Path], topic: str, file: TextIO | None = None) -> Any:
    """Rows done of all the files' rows, with the event time reached (``file``: where to draw it;
    by default stderr, and only on a terminal)."""
    from tqdm import tqdm

    return tqdm(
        total=count_rows(files),
        unit="ev",
        unit_scale=True,
        desc=f"replay → {topic}",
        dynamic_ncols=True,
        disable=None if file is None else False,
        file=file,
        mininterval=0.2,
    )


def _start_state(state_file: Path, path: Path, topic: str) -> dict[str, Any]:
    return _load_state(state_file, path, topic) or {
        "version": STATE_VERSION,
        "path": str(path),
        "topic": topic,
        "file_index": 0,
        "row": 0,
        "offsets": {},
    }


def _resume(
    state_file: Path,
    state: dict[str, Any],
    start: tuple[int, int],
    bootstrap: str,
    topic: str,
    extra: dict[str, str],
    report: ReplayReport,
) -> set[tuple[int, int]]:
    """The rows an earlier, interrupted replay already put in the topic (none for a first replay)."""
    if not state_file.exists():
        return set()
    report.resumed_from = start
    sent_before = _already_sent(bootstrap, topic, state["offsets"], extra)
    logger.info(
        "replay resuming file_index=%d row=%d already_in_topic=%d", start[0], start[1], len(sent_before)
    )
    return sent_before


def replay(
    path: Path,
    spec: DetectorSpec,
    bootstrap: str,
    topic: str,
    *,
    speed: float | None = None,
    extra: dict[str, str] | None = None,
    state_file: Path | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
    chunk_rows: int = 50_000,
    on_chunk: Callable[[int], None] | None = None,
    start_ms: int | None = None,
    progress_file: TextIO | None = None,
) -> ReplayReport:
    """Publish every valid history row under ``path`` to ``topic``; see the module docstring.

    ``start_ms`` (``--from``) leaves out the rows whose event time is before it; pacing starts at
    the first row sent. It reads no offsets, so it works on every broker.
    """
    from confluent_kafka import KafkaException

    extra = dict(extra or {})
    path = Path(path).resolve()
    files = history_files(path)
    state_file = state_file or path.with_name(f".{path.name}.replay-{topic}.json")
    state = _start_state(state_file, path, topic)
    report = ReplayReport(state_file=state_file)
    start = (int(state["file_index"]), int(state["row"]))
    report.already_complete = state_file.exists() and start[0] >= len(files)
    sent_before = _resume(state_file, state, start, bootstrap, topic, extra, report)
    _save_state(state_file, state)  # from now on, an interruption is resumed (and de-duplicated)
    sender = _Sender(bootstrap, topic, extra, dict(state["offsets"]), speed)
    sender.start_ms = start_ms
    bar = _progress_bar(files, topic, progress_file) if progress else None
    sender.bar = bar
    try:
        for batch in read_history(path, spec, chunk_rows=chunk_rows, start=start):
            report.bad.extend(batch.bad)
            if not sender.send_chunk(batch, sent_before, report, stop):
                break
            sender.flush()
            state.update(file_index=batch.file_index, row=batch.last_row + 1, offsets=sender.offsets)
            _save_state(state_file, state)
            sender.end_chunk(len(batch.rows) + len(batch.bad))
            if on_chunk is not None:
                on_chunk(report.sent)
        else:
            report.completed = True
    except KafkaException as exc:
        raise StreamsError(f"replay: the broker refused an event: {exc}") from exc
    finally:
        sender.producer.flush(30)
        if bar is not None:
            bar.close()
    if report.completed:
        state.update(file_index=len(files), row=0, offsets=sender.offsets)
        _save_state(state_file, state)
    return report
