"""Warm start: models bootstrapped from history by `cutstream backfill --warm-start-out` make a new
worker's first live window INFERENCE, and an anomaly in that very window is detected."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.conftest import FAST_GROUP

pytestmark = pytest.mark.integration

BASE_MS = 1_767_225_600_000
WINDOW_MS = 1_000
HISTORY_WINDOWS = 300


def _spec(topic: str) -> dict:
    return {
        "name": "shop",
        "topic": topic,
        "timestamp_field": "ts",
        "dimensions": ["host"],
        "measures": [{"field": "value", "aggregation": "sum", "missing": "skip"}],
        "window_ms": WINDOW_MS,
        "idle_timeout_ms": 1_000,
        # seconds-long windows: the history spans minutes, not the day LEARNING waits for by default
        "model": {"scoring": {"learning_ms": 0}},
    }


def _value(w: int, host: str) -> float:
    return (10.0 if host == "a" else 20.0) + 2.0 * math.sin(w / 5.0)


def test_first_live_window_is_inference_and_its_spike_is_detected(
    tmp_path: Path, bootstrap: str, topic_factory, group_factory
) -> None:
    from confluent_kafka import Producer

    from cutstream.config import AppConfig
    from streams.config import WorkerSettings
    from streams.history import event_key
    from streams.worker import Worker

    topic = topic_factory("warm", partitions=2)
    history = tmp_path / "history.csv"
    history.write_text(
        "ts,host,value\n"
        + "".join(
            f"{BASE_MS + w * WINDOW_MS + 10},{h},{_value(w, h):.4f}\n"
            for w in range(HISTORY_WINDOWS)
            for h in "ab"
        )
    )
    config = tmp_path / "detectors.yaml"
    config.write_text(json.dumps({"detectors": [_spec(topic)]}))
    warm = tmp_path / "warm.ckpt"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cutstream",
            "backfill",
            str(history),
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "history-results"),
            "--warm-start-out",
            str(warm),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "saved the models of 2 series" in done.stdout

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    live = range(HISTORY_WINDOWS, HISTORY_WINDOWS + 5)
    for w in live:
        for h in "ab":
            v = _value(w, h) * (8.0 if (h == "a" and w == HISTORY_WINDOWS) else 1.0)
            p.produce(
                topic,
                key=event_key([("host", h)]),
                value=json.dumps({"ts": BASE_MS + w * WINDOW_MS + 10, "host": h, "value": v}).encode(),
            )
    assert p.flush(10) == 0
    app = AppConfig(
        brokers=bootstrap,
        data_dir=tmp_path / "live",
        group_id=group_factory(),
        kafka=dict(FAST_GROUP),
        results_topic=f"{topic}.results",
        detectors=(_spec(topic),),
    )
    Worker(app, settings=WorkerSettings(warm_start=(str(warm),))).run_until_idle(idle_s=3.0, timeout_s=120)

    rows = (
        ds.dataset(tmp_path / "live" / "results", format="parquet", partitioning="hive")
        .to_table()
        .to_pylist()
    )
    first = {
        r["dimensionList"][0]["value"]: r
        for r in rows
        if r["windowStart"].timestamp() * 1000 == BASE_MS + HISTORY_WINDOWS * WINDOW_MS
    }
    assert set(first) == {"a", "b"}
    assert all(r["modelStage"] == "INFERENCE" and r["warmStarted"] for r in first.values())
    assert first["a"]["processedDataPoints"] == HISTORY_WINDOWS + 1
    assert first["a"]["anomalyDecision"] == 1
    assert first["b"]["anomalyDecision"] == 0
