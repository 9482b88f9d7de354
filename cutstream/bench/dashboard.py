"""`cutstream bench dashboard`: the dashboard's first page and a series switch over 10M result rows.

The fixture is generated once (vectorized pyarrow; RESULT_SCHEMA; laid out like the Parquet sink's
output: ``results/detector=<name>/date=<day>/p<partition>-<first>-<last>.parquet``, one file per
simulated flush) and cached under ``--fixture-dir`` (default: a directory in the system temp dir).

Measured, server-side, by calling the very functions the dashboard's callbacks call
(:mod:`dashboard.views`): the first page (KPIs, the top-series list, the anomaly table, the chart
of the top series) cold (new DuckDB database, empty caches) and warm (a live refresh), a series
switch (the chart of another series), and one real HTTP round trip through Dash's
``/_dash-update-component`` endpoint for the chart callback.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

#: The fixture's detector, measure and dimension name.
DETECTOR = "bench"
MEASURE = "latency_ms"
DIMENSION = "host"


def series_name(i: int) -> str:
    """The dimension value of series ``i``."""
    return f"host-{i:05d}"


def generate_results(
    data_dir: Path,
    n_series: int,
    n_windows: int,
    window_ms: int = 600_000,
    start_ms: int = 1_767_225_600_000,  # 2026-01-01T00:00:00Z
    spikes: Sequence[tuple[int, int]] = (),
    windows_per_file: int = 6,
    learning_windows: int = 10,
    seed: int = 7,
    detector: str = DETECTOR,
    measure: str = MEASURE,
) -> int:
    """Write a synthetic results tree with RESULT_SCHEMA; returns the number of rows written.

    Series ``i`` is a daily sine with noise around ``100 + i % 50``; ``spikes`` are ``(series, window)``
    pairs whose value jumps and whose score goes above the threshold (anomalyDecision = 1). The first
    ``learning_windows`` windows are LEARNING with a zero score. Rows are in window order, then series
    order (as a worker emits them).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sinks.record import DIMENSION_TYPE, RESULT_SCHEMA, STAGE_INFERENCE, STAGE_LEARNING, format_period
    from sinks.record import timeseries_id as make_id

    rng = np.random.default_rng(seed)
    ids = pa.array([make_id(detector, measure, {DIMENSION: series_name(i)}) for i in range(n_series)])
    dims_values = pa.array([series_name(i) for i in range(n_series)])
    spike_set = {(s, w) for s, w in spikes}
    base = 100.0 + (np.arange(n_series) % 50)
    rows = 0
    for w0 in range(0, n_windows, windows_per_file):
        w1 = min(n_windows, w0 + windows_per_file)
        # a flush never spans two days (the sink partitions by the window's day)
        day_end = (((start_ms + w0 * window_ms) // 86_400_000) + 1) * 86_400_000
        w1 = min(w1, max(w0 + 1, -(-(day_end - start_ms) // window_ms)))
        nw = w1 - w0
        n = nw * n_series
        w_idx = np.repeat(np.arange(w0, w1), n_series)
        s_idx = np.tile(np.arange(n_series), nw)
        t_ms = start_ms + w_idx * window_ms
        phase = 2 * np.pi * (t_ms % 86_400_000) / 86_400_000
        expected = base[s_idx] * (1 + 0.2 * np.sin(phase))
        value = expected + rng.normal(0, 2.0, n)
        score = np.clip(rng.gamma(2.0, 6.0, n), 0, 60)
        decision = np.zeros(n, np.int8)
        for s, w in spike_set:
            if w0 <= w < w1:
                k = (w - w0) * n_series + s
                value[k] = expected[k] * 4
                score[k] = 92.0
                decision[k] = 1
        learning = w_idx < learning_windows
        score[learning] = 0.0
        decision[learning] = 0
        processed = (w_idx + 1).astype(np.int64)
        confidence = np.minimum(100.0, processed * 0.5)
        starts = [format_period(start_ms + w * window_ms) for w in range(w0, w1 + 1)]
        start_txt = pa.array(starts[:-1]).take(pa.array(w_idx - w0))
        end_txt = pa.array(starts[1:]).take(pa.array(w_idx - w0))
        dims = pa.ListArray.from_arrays(
            pa.array(np.arange(n + 1, dtype=np.int32)),
            pa.StructArray.from_arrays([pa.array([DIMENSION] * n), dims_values.take(pa.array(s_idx))],
                                       fields=list(DIMENSION_TYPE)),
        )
        table = pa.table({
            "detectorName": pa.array([detector] * n),
            "measure": pa.array([measure] * n),
            "timeseriesId": ids.take(pa.array(s_idx)),
            "dimensionList": dims,
            "aggregatedMeasureValue": value,
            "detectionPeriodStartTime": start_txt,
            "detectionPeriodEndTime": end_txt,
            "anomalyScore": score,
            "anomalyDecisionThreshold": np.full(n, 70.0),
            "anomalyDecision": decision,
            "anomalyConfidenceScore": confidence,
            "modelStage": pa.array(np.where(learning, STAGE_LEARNING, STAGE_INFERENCE)),
            "processedDataPoints": processed,
            "expectedValue": np.where(learning, np.nan, expected),
            "rawScore": score / 40.0,
            "windowStart": pa.array(t_ms, pa.timestamp("ms", tz="UTC")),
            "missingWindow": np.zeros(n, bool),
            "warmStarted": np.zeros(n, bool),
        }).cast(RESULT_SCHEMA)
        day = dt.datetime.fromtimestamp((start_ms + w0 * window_ms) / 1000, tz=dt.UTC).date()
        out = data_dir / "results" / f"detector={detector}" / f"date={day.isoformat()}"
        out.mkdir(parents=True, exist_ok=True)
        first, last = w0 * n_series, w1 * n_series - 1
        tmp = out / f".p0-{first:012d}-{last:012d}.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        tmp.rename(out / f"p0-{first:012d}-{last:012d}.parquet")
        rows += n
    return rows


def _fixture(rows: int, fixture_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    n_series = 10_000 if rows >= 1_000_000 else max(10, rows // 1000)
    n_windows = max(1, rows // n_series)
    root = (fixture_dir or Path(tempfile.gettempdir()) / "cutstream-bench-dashboard") / f"rows-{n_series * n_windows}"
    spikes = [(s, w) for s, w in ((17, n_windows - 30), (4242 % n_series, n_windows - 100),
                                  (999 % n_series, n_windows // 2)) if w >= 0]
    meta = {"series": n_series, "windows": n_windows, "rows": n_series * n_windows, "spikes": spikes}
    marker = root / "fixture.json"
    if not (marker.exists() and json.loads(marker.read_text()) == meta):
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t0 = time.perf_counter()
        generate_results(root, n_series, n_windows, spikes=spikes)
        meta_written = dict(meta)
        marker.write_text(json.dumps(meta_written))
        click.echo(f"generated fixture rows={meta['rows']} in {time.perf_counter() - t0:.1f}s at {root}",
                   err=True)
    return root, meta


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def measure(rows: int, repeats: int = 5, fixture_dir: Path | None = None, http: bool = True) -> dict[str, Any]:
    """Generate (or reuse) the fixture and time the first page and a series switch (seconds)."""
    import sinks.query as q
    from dashboard import views

    root, meta = _fixture(rows, fixture_dir)
    size_mb = sum(p.stat().st_size for p in (root / "results").rglob("*.parquet")) / 1e6
    files = len(list((root / "results").rglob("*.parquet")))

    def reset() -> None:
        q.clear_cache()
        q._DB = None  # a new in-memory database: no Parquet metadata cached

    cold, warm, switch = [], [], []
    first_page: dict[str, Any] = {}
    for _ in range(repeats):
        reset()
        t, first_page = _timed(views.first_page, root, views.DEFAULT_PERIOD)
        cold.append(t)
        t, _ = _timed(views.first_page, root, views.DEFAULT_PERIOD)
        warm.append(t)
    top = first_page["series_options"]
    others = [o["value"] for o in top[1:]] or [top[0]["value"]]
    for i in range(repeats):
        t, fig = _timed(views.chart, root, views.DEFAULT_PERIOD, others[i % len(others)], None)
        switch.append(t)
    out: dict[str, Any] = {
        "bench": "dashboard", "rows": meta["rows"], "series": meta["series"], "windows": meta["windows"],
        "files": files, "parquet_mb": round(size_mb, 1), "period": views.DEFAULT_PERIOD,
        "first_page_cold_s": round(statistics.median(cold), 3), "first_page_cold_max_s": round(max(cold), 3),
        "first_page_warm_s": round(statistics.median(warm), 3),
        "series_switch_s": round(statistics.median(switch), 3), "series_switch_max_s": round(max(switch), 3),
        "phases_cold_s": first_page.get("timings", {}),
    }
    if http:
        out.update(_http_switch(root, others, repeats))
    return out


def _http_switch(root: Path, series: list[str], repeats: int) -> dict[str, Any]:
    """One real HTTP round trip per repeat through Dash's callback endpoint (the chart callback)."""
    import socket
    import threading

    import httpx
    from waitress.server import create_server

    from dashboard.app import create_app

    app = create_app(root, refresh_ms=60_000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server(app.server, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    times = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.get("/").raise_for_status()
            for i in range(repeats):
                body = {
                    "output": "chart.figure",
                    "outputs": {"id": "chart", "property": "figure"},
                    "inputs": [
                        {"id": "series", "property": "value", "value": series[i % len(series)]},
                        {"id": "period", "property": "value", "value": "24h"},
                        {"id": "focus", "property": "data", "value": None},
                        {"id": "tick", "property": "n_intervals", "value": 0},
                    ],
                    "changedPropIds": ["series.value"],
                    "state": [],
                }
                t0 = time.perf_counter()
                r = client.post("/_dash-update-component", json=body)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
    finally:
        server.close()
    return {"http_series_switch_s": round(statistics.median(times), 3)}


def markdown_report(quick: bool) -> str:
    """The BENCHMARKS.md block: fixture, then first page and series switch times."""
    rows = 200_000 if quick else 10_000_000
    r = measure(rows, repeats=3 if quick else 5)
    phases = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["phases_cold_s"].items())
    return (
        f"Command: `cutstream bench dashboard --rows {rows}` (fixture: {r['series']:,} series × "
        f"{r['windows']:,} windows of 10 min = {r['rows']:,} rows in {r['files']} Parquet files, "
        f"{r['parquet_mb']} MB zstd; default period: the last {r['period']} of data). Median of "
        f"{3 if quick else 5} runs; server-side time of the functions the callbacks call, plus one "
        "real HTTP round trip through Dash's callback endpoint.\n\n"
        "| what | time |\n|---|---|\n"
        f"| first page, cold (new DuckDB database, empty caches): KPIs + top series + anomaly table + "
        f"chart | {r['first_page_cold_s'] * 1000:.0f} ms (max {r['first_page_cold_max_s'] * 1000:.0f} ms) |\n"
        f"| first page, warm (a live refresh with no new files) | {r['first_page_warm_s'] * 1000:.0f} ms |\n"
        f"| series switch (chart of another series) | {r['series_switch_s'] * 1000:.0f} ms "
        f"(max {r['series_switch_max_s'] * 1000:.0f} ms) |\n"
        f"| series switch over HTTP (`/_dash-update-component`) | "
        f"{r.get('http_series_switch_s', float('nan')) * 1000:.0f} ms |\n\n"
        f"Cold first page by phase: {phases}.\n"
    )


@click.command("dashboard")
@click.option("--rows", type=int, default=10_000_000, show_default=True, help="result rows in the fixture")
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option("--fixture-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the generated fixture is cached (default: the temp dir)")
@click.option("--no-http", is_flag=True, help="skip the HTTP round trip")
def dashboard_bench(rows: int, repeats: int, fixture_dir: Path | None, no_http: bool) -> None:
    """Time the dashboard's first page and a series switch over a generated results fixture."""
    click.echo(json.dumps(measure(rows, repeats, fixture_dir, http=not no_http)))


COMMANDS = [dashboard_bench]
