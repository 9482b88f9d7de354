"""Helpers for the worker integration tests: config files, worker subprocesses, streams, Parquet reads."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import FAST_GROUP, wait_for

REPO = Path(__file__).resolve().parents[2]
BASE_MS = 1_704_067_200_000  # 2024-01-01 00:00:00 UTC


@dataclass(frozen=True)
class Stream:
    """A known, time-ordered stream: ``n_series`` hosts, ``per_window`` events per window each."""

    n_series: int = 6
    n_windows: int = 120
    per_window: int = 2
    window_ms: int = 1_000

    def hosts(self) -> list[str]:
        return [f"h{i}" for i in range(self.n_series)]

    def events(self, first_window: int = 0, last_window: int | None = None) -> list[tuple[bytes, bytes]]:
        last = self.n_windows if last_window is None else last_window
        out = []
        for w in range(first_window, last):
            for i, host in enumerate(self.hosts()):
                for j in range(self.per_window):
                    v = 10.0 + i + 3.0 * math.sin(w / (4.0 + i)) + 0.1 * ((w * 7 + j * 3 + i) % 5)
                    if w % 37 == 36 and i % 2 == 0:
                        v *= 6.0  # a few spikes
                    ts = BASE_MS + w * self.window_ms + 10 + j * (self.window_ms // (self.per_window + 1))
                    out.append(
                        (host.encode(), json.dumps({"ts": ts, "host": host, "value": round(v, 4)}).encode())
                    )
        return out


def write_config(
    path: Path,
    topic: str,
    group: str,
    results_topic: str,
    idle_timeout_ms: int = 0,
    window_ms: int = 1_000,
    group_protocol: str = "classic",
) -> Path:
    """A one-detector config; no idle timeout by default (results then depend on event time only).

    ``group_protocol="consumer"``: KIP-848 (Apache Kafka only), whose timing the broker sets (the
    test broker: 6 s sessions, 500 ms heartbeats).
    """
    kafka = {"group.protocol": "consumer"} if group_protocol == "consumer" else dict(FAST_GROUP)
    cfg = {
        "group_id": group,
        "results_topic": results_topic,
        "kafka": kafka,
        "detectors": [
            {
                "name": "hosts",
                "topic": topic,
                "timestamp_field": "ts",
                "dimensions": ["host"],
                "measures": [{"field": "value", "aggregation": "sum"}],
                "window_ms": window_ms,
                "idle_timeout_ms": idle_timeout_ms,
                "model": {
                    "forest": {"n_trees": 10, "sample_size": 32, "shingle_size": 2, "seed": 5},
                    "scoring": {"learning_points": 12, "learning_ms": 0},
                },
            }
        ],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def produce(bootstrap: str, topic: str, events: Sequence[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5})
    for key, value in events:
        p.produce(topic, key=key, value=value)
    if p.flush(20) != 0:
        raise RuntimeError("events were not delivered")


class WorkerProc:
    """``python -m cutstream worker ...`` as a child process, its log in a file."""

    def __init__(self, config: Path, bootstrap: str, data_dir: Path, log: Path, *extra: str) -> None:
        self.log = log
        self.status = log.with_suffix(".status.json")
        args = [
            sys.executable,
            "-m",
            "cutstream.testing" if "--fault" in extra else "cutstream",  # fault injection: a test command
            "worker",
            "--config",
            str(config),
            "--brokers",
            bootstrap,
            "--data-dir",
            str(data_dir),
            "--status-file",
            str(self.status),
            *extra,
        ]
        self._log_fh = open(log, "ab")
        self.proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return None
        return data if data.get("pid") == self.proc.pid else None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout_s: float = 30) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log_fh.close()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def result_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "results").glob("detector=*/date=*/*.parquet"))


def read_results(data_dir: Path) -> Any:
    """Every result row in Parquet (a pyarrow Table), or None while files move under us."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in result_files(data_dir):
        try:
            tables.append(pq.ParquetFile(path).read())
        except (OSError, pa.ArrowInvalid):
            return None
    if not tables:
        return None
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables])


def keyed_rows(table: Any, columns: Sequence[str]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """``(timeseriesId, windowStart ms) -> row values`` (raises on a duplicate key)."""
    import pyarrow as pa

    ids = table.column("timeseriesId").to_pylist()
    starts = table.column("windowStart").cast(pa.int64()).to_pylist()
    cols = [table.column(c).to_pylist() for c in columns]
    out: dict[tuple[str, int], tuple[Any, ...]] = {}
    for i, key in enumerate(zip(ids, starts, strict=True)):
        if key in out:
            raise AssertionError(f"duplicate result for series={key[0][:12]} window={key[1]}")
        out[key] = tuple(c[i] for c in cols)
    return out


def by_window(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Results-topic records by (timeseriesId, windowStart) (raises on a duplicate)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        key = (r["timeseriesId"], r["windowStart"])
        assert key not in out, f"duplicate result on the results topic: series={key[0][:12]} window={key[1]}"
        out[key] = r
    return out


def read_committed(bootstrap: str, topic: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Every record a read_committed consumer gets from ``topic``, read up to each partition's end
    (the last stable offset: every transaction is resolved once the workers stopped)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    tps = [TopicPartition(topic, p, 0) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
    ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    c.assign(tps)
    out: list[dict[str, Any]] = []

    def at_end() -> bool:
        out.extend(json.loads(m.value()) for m in c.consume(1000, 0.2) if not m.error())
        return all(tp.offset >= ends[tp.partition] for tp in c.position(tps))

    try:
        wait_for(at_end, timeout_s=timeout_s, message=f"the end of {topic}")
    finally:
        c.close()
    return out
