"""`cutstream backfill`: history → Parquet results through the worker's stages, idempotent, with bad rows
reported by row number and a warm-start file that restores the models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from detector.detector import Detector
from sinks.record import CONTRACT_NAMES
from streams.backfill import backfill, load_warm_start, save_warm_start
from streams.config import DetectorSpec

SPEC = DetectorSpec(
    name="shop",
    topic="orders",
    timestamp_field="ts",
    dimensions=("item",),
    measures=({"field": "qty", "aggregation": "sum"},),
    window_ms=60_000,
    model={
        "forest": {"n_trees": 20, "sample_size": 64, "shingle_size": 2, "seed": 3},
        "scoring": {"learning_points": 40, "learning_ms": 0},
    },
)
T0 = 1_767_225_600_000
SPIKE_WINDOW = 300


def _history(path: Path, windows: int = 400) -> None:
    rng = np.random.default_rng(5)
    lines = ["ts,item,qty"]
    for w in range(windows):
        for item, base in (("A", 10.0), ("B", 30.0)):
            level = base * (1.5 if (w // 10) % 2 else 1.0)
            if item == "A" and w == SPIKE_WINDOW:
                level *= 6
            for k in range(3):
                lines.append(
                    f"{T0 + w * 60_000 + k * 15_000},{item},{rng.normal(level, level * 0.03) / 3:.4f}"
                )
    path.write_text("\n".join(lines) + "\n")


def _read(data_dir: Path):
    files = sorted((data_dir / "results").rglob("*.parquet"))
    return files, pq.ParquetDataset(files).read() if files else None


def test_backfill_writes_every_window_once_and_flags_the_spike(tmp_path: Path) -> None:
    hist = tmp_path / "h.csv"
    _history(hist)
    report, _ = backfill(hist, SPEC, tmp_path / "out", chunk_rows=500)
    assert report.events == 400 * 2 * 3 and not report.bad
    files, table = _read(tmp_path / "out")
    assert table.num_rows == report.results == 800  # every window of both series, the last one drained
    assert set(CONTRACT_NAMES) <= set(table.column_names)
    rows = table.to_pylist()
    keys = [(r["timeseriesId"], r["detectionPeriodStartTime"]) for r in rows]
    assert len(keys) == len(set(keys))
    flagged = {
        (r["dimensionList"][0]["value"], (r["windowStart"].timestamp() * 1000 - T0) // 60_000)
        for r in rows
        if r["anomalyDecision"] == 1
    }
    assert ("A", SPIKE_WINDOW) in flagged
    # a re-run rewrites the same files: nothing is added
    backfill(hist, SPEC, tmp_path / "out", chunk_rows=500)
    files2, table2 = _read(tmp_path / "out")
    assert files2 == files and table2.num_rows == 800


def test_warm_start_file_restores_the_models(tmp_path: Path) -> None:
    hist = tmp_path / "h.csv"
    _history(hist, windows=120)
    _, det = backfill(hist, SPEC, tmp_path / "out", write=False)
    path = tmp_path / "warm.json"
    assert save_warm_start(det, SPEC, path) == 2
    fresh = Detector(SPEC.model)
    fresh.from_state(load_warm_start(path, SPEC), warm_start=True)
    keys = sorted(det.keys())
    assert sorted(fresh.keys()) == keys
    nxt = np.array([12.0, 31.0])
    stamps = np.array([T0 + 121 * 60_000] * 2, dtype=np.int64)
    a, b = det.process_many(keys, nxt, stamps), fresh.process_many(keys, nxt, stamps)
    np.testing.assert_array_equal(a.anomaly_score, b.anomaly_score)
    np.testing.assert_array_equal(a.processed_points, b.processed_points)
    assert b.inference.all() and b.warm_started.all()
    other = SPEC.model_copy(update={"name": "other"})
    with pytest.raises(Exception, match="not made for detector"):
        load_warm_start(path, other)


def test_cli_reports_bad_rows_with_row_numbers(tmp_path: Path) -> None:
    hist = tmp_path / "h.csv"
    hist.write_text(
        "ts,item,qty\n2026-01-01 00:00:00,A,1\n2026-01-01 00:01:00,A,x\nyesterday,A,2\n"
        "2026-01-01 00:02:00,A,3\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"detectors": [SPEC.model_dump(mode="json")]}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cutstream",
            "backfill",
            str(hist),
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "h.csv:3: non-numeric qty 'x'" in proc.stderr and "h.csv:4: bad timestamp 'yesterday'" in proc.stderr
    )
    assert "backfilled 2 events into 3 results" in proc.stdout
