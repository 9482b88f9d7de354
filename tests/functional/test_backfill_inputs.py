"""`cutstream backfill` reads the same history the same way whatever its timestamps look like, and
reports bad CSV rows by their file line (exit status 2), never with a traceback."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streams.backfill import backfill
from streams.config import DetectorSpec

SPEC = DetectorSpec(
    name="shop",
    topic="orders",
    timestamp_field="ts",
    dimensions=("item",),
    measures=({"field": "qty", "aggregation": "sum"},),
    window_ms=60_000,
    model={
        "forest": {"n_trees": 10, "sample_size": 32, "shingle_size": 1, "seed": 3},
        "scoring": {"learning_points": 20, "learning_ms": 0},
    },
)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _events(windows: int = 120) -> tuple[list[int], list[str], list[float]]:
    """Two series, two events a window 30 s apart (whole seconds: epoch seconds can hold them)."""
    rng = np.random.default_rng(7)
    ts, items, qty = [], [], []
    for w in range(windows):
        for item, base in (("A", 10.0), ("B", 40.0)):
            for k in range(2):
                ts.append(T0 + w * 60_000 + k * 30_000)
                items.append(item)
                qty.append(round(float(rng.normal(base * (4 if w == 90 and item == "A" else 1), 1.0)), 3))
    return ts, items, qty


def _results(data_dir: Path) -> list[dict]:
    files = sorted((data_dir / "results").rglob("*.parquet"))
    table = pa.concat_tables([pq.ParquetFile(f).read() for f in files])
    return sorted(table.to_pylist(), key=lambda r: (r["timeseriesId"], r["windowStart"]))


def test_microsecond_parquet_and_epoch_seconds_csv_give_the_iso_texts_results(tmp_path: Path) -> None:
    ts, items, qty = _events()
    iso = tmp_path / "iso.csv"
    iso.write_text(
        "ts,item,qty\n"
        + "".join(
            f"{dt.datetime.fromtimestamp(t / 1000, dt.UTC):%Y-%m-%d %H:%M:%S},{i},{q}\n"
            for t, i, q in zip(ts, items, qty, strict=True)
        )
    )
    seconds = tmp_path / "seconds.csv"
    seconds.write_text(
        "ts,item,qty\n" + "".join(f"{t // 1000},{i},{q}\n" for t, i, q in zip(ts, items, qty, strict=True))
    )
    micro = tmp_path / "micro.parquet"  # what DuckDB and pandas write: timestamp[us]
    us = pa.array([t * 1000 for t in ts], pa.int64()).cast(pa.timestamp("us"))
    pq.write_table(pa.table({"ts": us, "item": items, "qty": qty}), micro)
    nanos_tz = tmp_path / "nanos_tz.parquet"
    ns = pa.array([t * 1_000_000 for t in ts], pa.int64()).cast(pa.timestamp("ns", tz="America/New_York"))
    pq.write_table(pa.table({"ts": ns, "item": items, "qty": qty}), nanos_tz)

    want = None
    for source in (iso, seconds, micro, nanos_tz):
        report, _ = backfill(source, SPEC, tmp_path / source.stem, chunk_rows=97)
        assert report.events == len(ts) and not report.bad, source.name
        got = _results(tmp_path / source.stem)
        assert len(got) == 2 * 120
        if want is None:
            want = got
            assert max(r["anomalyScore"] for r in got) > 0  # scored, not all LEARNING
        assert got == want, source.name


def test_bad_csv_rows_are_reported_by_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "detectors.yaml"
    config.write_text(
        "detectors:\n"
        "  - name: shop\n"
        "    topic: orders\n"
        "    timestamp_field: ts\n"
        "    dimensions: [item]\n"
        "    measures: [{field: qty, aggregation: sum}]\n"
        "    model: {forest: {n_trees: 5, sample_size: 16}}\n"
    )
    hist = tmp_path / "h.csv"
    hist.write_text(
        "ts,item,qty\n"
        "2026-01-01 00:00:00,A,1\n"
        "\n"
        "2026-01-01 00:01:00,A\n"
        "2026-01-01 00:02:00,A,2,9\n"
        "2026-01-01 00:03:00,A,two\n"
        "2026-01-01 00:04:00,A,4\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cutstream",
            "backfill",
            str(hist),
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert f"{hist}:4: 2 fields where the header has 3" in run.stderr
    assert f"{hist}:5: 4 fields where the header has 3" in run.stderr
    assert f"{hist}:6: non-numeric qty 'two'" in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].startswith("3 history rows skipped")
    assert "backfilled 2 events" in run.stdout
