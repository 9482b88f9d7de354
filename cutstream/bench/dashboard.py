"""`cutstream bench dashboard`: the dashboard's first page and a series switch over 10M result rows.

The fixture is generated once (vectorized pyarrow, RESULT_SCHEMA, written through the real
``sinks.parquet.ParquetSink``: one file per simulated flush of 6 windows × all series) and cached
under ``--fixture-dir`` (default: a directory in the system temp dir).

Measured, server-side, by calling the very functions the dashboard's callbacks call
(:mod:`dashboard.views`): the first page (KPIs, the top-series list, the anomaly table, the chart
of the top series) cold (new DuckDB database, empty caches), after new data (caches stale) and
warm (a live refresh), and a series switch (the chart of another series). Then against
`cutstream dashboard` in a subprocess: HTTP round trips through Dash's ``/_dash-update-component``
endpoint for the chart callback, and headless Chromium (first visit, returning visit, series
switch in the picker) where Debian's chromium is installed. Last, the anomaly table with a 100 KB
filter: the parser alone on hostile texts (its length cap lifted), the table view and the callback
over HTTP (both answered with the cap's message); ``--filter-only`` runs just these.
"""

from __future__ import annotations

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

    from sinks.parquet import ParquetSink
    from sinks.record import DIMENSION_TYPE, RESULT_SCHEMA, STAGE_INFERENCE, STAGE_LEARNING, format_period
    from sinks.record import timeseries_id as make_id

    sink = ParquetSink(data_dir)
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
            pa.StructArray.from_arrays(
                [pa.array([DIMENSION] * n), dims_values.take(pa.array(s_idx))], fields=list(DIMENSION_TYPE)
            ),
        )
        table = pa.table(
            {
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
                "expectedLow": np.where(learning, np.nan, expected * 0.9),
                "expectedHigh": np.where(learning, np.nan, expected * 1.1),
                "anomalyReason": pa.array(np.where(score > 0, "value", "")),
                "valueScore": score,
                "forestScore": np.zeros(n),
            }
        ).cast(RESULT_SCHEMA)
        first, last = w0 * n_series, w1 * n_series - 1
        sink.write(table, "events.0", first, last)  # the real sink: layout, names, atomic publish
        rows += n
    return rows


def _fixture(rows: int, fixture_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    n_series = 10_000 if rows >= 1_000_000 else max(10, rows // 1000)
    n_windows = max(1, rows // n_series)
    root = (
        fixture_dir or Path(tempfile.gettempdir()) / "cutstream-bench-dashboard"
    ) / f"rows-{n_series * n_windows}"
    spikes = [
        (s, w)
        for s, w in (
            (17, n_windows - 30),
            (4242 % n_series, n_windows - 100),
            (999 % n_series, n_windows // 2),
        )
        if w >= 0
    ]
    meta = json.loads(
        json.dumps(
            {
                "series": n_series,
                "windows": n_windows,
                "rows": n_series * n_windows,
                "spikes": spikes,
                "version": 2,
            }
        )
    )
    marker = root / "fixture.json"
    if not (marker.exists() and json.loads(marker.read_text()) == meta):
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t0 = time.perf_counter()
        generate_results(root, n_series, n_windows, spikes=spikes)
        marker.write_text(json.dumps(meta))
        click.echo(
            f"generated fixture rows={meta['rows']} in {time.perf_counter() - t0:.1f}s at {root}", err=True
        )
    return root, meta


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def measure(
    rows: int, repeats: int = 5, fixture_dir: Path | None = None, http: bool = True, browser: bool = True
) -> dict[str, Any]:
    """Generate (or reuse) the fixture and time the first page and a series switch (seconds)."""
    import os

    import sinks.query as q
    from dashboard import views
    from dashboard.testing import first_page as timed_first_page

    root, meta = _fixture(rows, fixture_dir)
    files = list((root / "results").rglob("*.parquet"))
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    timed_first_page(root, views.DEFAULT_PERIOD)  # imports, plotly's template: one-time process costs

    cold, fresh, warm, switch = [], [], [], []
    phases: dict[str, list[float]] = {}
    first_page: dict[str, Any] = {}
    for _ in range(repeats):
        q.clear_cache()
        q._DB = None  # a new in-memory database: no Parquet metadata cached
        t, first_page = _timed(timed_first_page, root, views.DEFAULT_PERIOD)
        cold.append(t)
        for name, seconds in first_page["timings"].items():
            phases.setdefault(name, []).append(seconds)
        q.clear_cache()  # new files arrived: every memoized answer is stale, the database stays
        t, _ = _timed(timed_first_page, root, views.DEFAULT_PERIOD)
        fresh.append(t)
        t, _ = _timed(timed_first_page, root, views.DEFAULT_PERIOD)
        warm.append(t)
    top = first_page["series_options"]
    others = [o["value"] for o in top[1:]] or [top[0]["value"]]
    for i in range(repeats):
        t, _ = _timed(views.chart, root, views.DEFAULT_PERIOD, others[i % len(others)], None)
        switch.append(t)
    out: dict[str, Any] = {
        "bench": "dashboard",
        "rows": meta["rows"],
        "series": meta["series"],
        "windows": meta["windows"],
        "files": len(files),
        "parquet_mb": round(size_mb, 1),
        "period": views.DEFAULT_PERIOD,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "first_page_cold_s": round(statistics.median(cold), 3),
        "first_page_cold_max_s": round(max(cold), 3),
        "first_page_new_data_s": round(statistics.median(fresh), 3),
        "first_page_warm_s": round(statistics.median(warm), 3),
        "series_switch_s": round(statistics.median(switch), 3),
        "series_switch_max_s": round(max(switch), 3),
        "phases_cold_s": {k: round(statistics.median(v), 3) for k, v in phases.items()},
    }
    out.update(filter_parse(repeats))
    out.update(_filter_view(root, repeats))
    if http or browser:
        out.update(_served(root, others, repeats, http, browser))
    return out


def _served(
    root: Path, series: list[str], repeats: int, http: bool, browser: bool, filter_http: bool = False
) -> dict[str, Any]:
    """Against `cutstream dashboard` in a subprocess (waitress): callback round trips and a real browser.

    The HTTP round trips ask for series from the end of the top list, the browser picks from its
    start: every measured switch is a series the server has not drawn yet (nothing memoized).
    """
    import os
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cutstream",
            "dashboard",
            "--data-dir",
            str(root),
            "--port",
            str(port),
            "--refresh-ms",
            "600000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.2)
        if browser and Path("/usr/bin/chromium").exists():
            out.update(_browser_first_page(url, repeats))
        if http:
            out.update(_series_switch_http(url, series, repeats))
        if http or filter_http:
            out.update(_filter_http(url, repeats))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
    return out


def _series_switch_http(url: str, series: list[str], repeats: int) -> dict[str, Any]:
    """Chart callback round trips for series the server has not drawn yet (seconds)."""
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(repeats):
            body = {
                "output": "..chart.figure...chart-key.data..",
                "outputs": [
                    {"id": "chart", "property": "figure"},
                    {"id": "chart-key", "property": "data"},
                ],
                "inputs": [
                    {"id": "series", "property": "value", "value": series[-(i % len(series)) - 1]},
                    {"id": "period", "property": "value", "value": "24h"},
                    {"id": "focus", "property": "data", "value": None},
                    {"id": "tick", "property": "n_intervals", "value": 0},
                ],
                "changedPropIds": ["series.value"],
                "state": [{"id": "chart-key", "property": "data", "value": None}],
            }
            t0 = time.perf_counter()
            r = client.post("/_dash-update-component", json=body)
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            if "anomaly score" not in r.text:
                raise RuntimeError(f"the chart callback did not answer a figure: {r.text[:300]}")
    return {"http_series_switch_s": round(statistics.median(times), 3)}


def _browser_first_page(url: str, repeats: int) -> dict[str, Any]:
    """Headless chromium, navigation start → KPIs, chart and anomaly table all drawn: a first visit
    (new profile: downloads and compiles plotly.js, 4.6 MB), revisits (JS from the browser cache),
    and series switches (pick another series in the picker → its chart drawn)."""
    from playwright.sync_api import sync_playwright

    ready = (
        "() => { const g = document.querySelector('#chart .js-plotly-plot');"
        " return g && g.data && g.data.length >= 7"
        " && document.querySelectorAll('#anomalies tbody tr td').length > 0"
        " && /[0-9]/.test(document.querySelector('#kpi-series')?.textContent || ''); }"
    )
    first, again, switch = [], [], []
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            ctx = b.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            for visit in range(repeats + 1):
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_function(ready, timeout=60_000)
                (first if visit == 0 else again).append(time.perf_counter() - t0)
            for i in range(repeats):
                title = page.text_content("#chart .gtitle") or ""
                page.click("#series")
                option = page.locator(".dash-dropdown-option").nth(i + 1)
                label = (option.text_content() or "").split(" · ")[0]
                t0 = time.perf_counter()
                option.click()
                page.wait_for_function(
                    "([old, want]) => {"
                    " const t = document.querySelector('#chart .gtitle')?.textContent || '';"
                    " return t !== old && t.startsWith(want); }",
                    arg=[title, label],
                    timeout=60_000,
                )
                switch.append(time.perf_counter() - t0)
            ctx.close()
        finally:
            b.close()
    return {
        "browser_first_visit_s": round(first[0], 3),
        "browser_first_page_s": round(statistics.median(again), 3),
        "browser_series_switch_s": round(statistics.median(switch), 3),
    }


#: The size of the filter texts timed (the issue's "a 100 KB filter").
FILTER_CHARS = 100 * 1024


def _filter_request(text: str) -> dict[str, Any]:
    """The anomaly table callback's request for a filter text (what the page posts)."""
    return {
        "output": "..anomalies.data...table-message.children..",
        "outputs": [{"id": "anomalies", "property": "data"}, {"id": "table-message", "property": "children"}],
        "inputs": [
            {"id": "period", "property": "value", "value": "24h"},
            {"id": "anomalies", "property": "filter_query", "value": text},
            {"id": "anomalies", "property": "sort_by", "value": []},
            {"id": "tick", "property": "n_intervals", "value": 0},
        ],
        "changedPropIds": ["anomalies.filter_query"],
        "state": [{"id": "anomalies", "property": "data", "value": None}],
    }


def filter_parse(repeats: int) -> dict[str, Any]:
    """The table filter's parser alone on 100 KB hostile texts, its length cap lifted (seconds).

    Each family of :func:`dashboard.testing.hostile_filters` at ~100 KB; the slowest family's
    median, and the most characters the scanner examined per input character (linear: about 1).
    """
    from dashboard.filter_query import ScanStats, parse_filter_query
    from dashboard.testing import hostile_filters
    from sinks.query import QueryInputError

    worst: tuple[float, str] = (0.0, "")
    per_char = 0.0
    for family, text in hostile_filters(FILTER_CHARS).items():
        times = []
        for _ in range(repeats):
            stats = ScanStats()
            t0 = time.perf_counter()
            try:
                parse_filter_query(text, max_chars=len(text), stats=stats)
            except QueryInputError:
                pass
            times.append(time.perf_counter() - t0)
            per_char = max(per_char, stats.chars / len(text))
        worst = max(worst, (statistics.median(times), family))
    return {
        "filter_parse_100kb_worst_s": round(worst[0], 4),
        "filter_parse_100kb_worst_family": worst[1],
        "filter_parse_chars_per_input_char": round(per_char, 2),
    }


def _filter_view(root: Path, repeats: int) -> dict[str, Any]:
    """The anomaly table's server-side path (:func:`dashboard.views.anomaly_rows`) with a 100 KB filter."""
    from dashboard import views
    from dashboard.testing import hostile_filters

    text = hostile_filters(FILTER_CHARS)["run of spaces inside a bare value"]
    times = []
    for _ in range(repeats):
        t, (_rows, message) = _timed(views.anomaly_rows, root, views.DEFAULT_PERIOD, text, None)
        times.append(t)
    if not message.startswith("Filter not applied"):
        raise RuntimeError(f"a 100 KB filter was not refused: {message!r}")
    return {"filter_view_100kb_s": round(statistics.median(times), 4)}


def _filter_http(url: str, repeats: int) -> dict[str, Any]:
    """``POST /_dash-update-component`` with a 100 KB filter → its message, round trip (seconds)."""
    import httpx

    from dashboard.testing import hostile_filters

    body = _filter_request(hostile_filters(FILTER_CHARS)["run of spaces inside a bare value"])
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = client.post("/_dash-update-component", json=body)
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            if "Filter not applied" not in r.text:
                raise RuntimeError(f"the 100 KB filter got no message: {r.text[:300]}")
    return {"http_filter_100kb_s": round(statistics.median(times), 4)}


def measure_filter(repeats: int = 20, http: bool = True) -> dict[str, Any]:
    """Only the 100 KB filter measurements, over the small (20,000-row) fixture."""
    import os

    root, meta = _fixture(20_000, None)
    out: dict[str, Any] = {"bench": "dashboard-filter", "rows": meta["rows"], "repeats": repeats}
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    out.update(filter_parse(repeats))
    out.update(_filter_view(root, repeats))
    if http:
        out.update(_served(root, [], repeats, http=False, browser=False, filter_http=True))
    return out


def markdown_report(quick: bool) -> str:
    """The BENCHMARKS.md block: fixture, then first page and series switch times."""
    from dashboard.testing import hostile_filters

    rows = 200_000 if quick else 10_000_000
    repeats = 3 if quick else 5
    r = measure(rows, repeats=repeats)
    # control: the same browser measurements over 20,000 rows show what the page costs by itself
    small = _fixture(20_000, None)[0]
    control = _served(small, [], repeats, http=False, browser=True)
    phases = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["phases_cold_s"].items())
    browser_note = ""
    if "browser_first_page_s" in r and "browser_first_page_s" in control:
        big, tiny = r["browser_first_page_s"], control["browser_first_page_s"]
        if abs(big - tiny) <= 0.3 * big:
            browser_note = (
                " In Chromium the first page takes about as long over 20,000 rows as over 10 million: "
                "what is left there is the page's own JavaScript (Dash, the data table, plotly.js) on "
                "the shared cores, not the data."
            )

    def ms(key: str, digits: int = 0) -> str:
        return f"{r[key] * 1000:.{digits}f} ms" if key in r else "not measured"

    def ctl(key: str) -> str:
        return f"{control[key] * 1000:.0f} ms" if key in control else "not measured"

    return (
        f"Command: `cutstream bench dashboard --rows {rows}`. Fixture: {r['series']:,} series × "
        f"{r['windows']:,} windows of 10 min = {r['rows']:,} result rows in {r['files']} Parquet files "
        f"({r['parquet_mb']} MB, zstd) written through the Parquet sink; the default period is the "
        f"last {r['period']} of data. Median of {repeats} runs; 1-minute load average during the run: "
        f"{r['load_avg_1m']} (the machine's 2 cores are shared).\n\n"
        "| what | time |\n|---|---|\n"
        f"| first page, server side, cold (new DuckDB database, empty caches): KPIs + top series + "
        f"anomaly table + chart of the top series | {ms('first_page_cold_s')} "
        f"(max {ms('first_page_cold_max_s')}) |\n"
        f"| first page, server side, after new files arrived (memoized answers stale) | "
        f"{ms('first_page_new_data_s')} |\n"
        f"| first page, server side, warm (a live refresh with nothing new) | {ms('first_page_warm_s')} |\n"
        f"| series switch, server side (chart of another series) | {ms('series_switch_s')} "
        f"(max {ms('series_switch_max_s')}) |\n"
        f"| series switch over HTTP (`POST /_dash-update-component` to `cutstream dashboard`) | "
        f"{ms('http_series_switch_s')} |\n"
        f"| anomaly table with a 100 KB filter over HTTP (answered with the length cap's message) | "
        f"{ms('http_filter_100kb_s', 1)} |\n"
        f"| the same, server side (`views.anomaly_rows`) | {ms('filter_view_100kb_s', 1)} |\n"
        f"| the filter parser alone on 100 KB hostile texts, cap lifted (slowest of "
        f"{len(hostile_filters(1))} kinds: {r['filter_parse_100kb_worst_family']}) | "
        f"{ms('filter_parse_100kb_worst_s', 1)} |\n"
        f"| first page in headless Chromium, navigation → KPIs, chart and table drawn; first visit "
        f"(new profile: plotly.js, 4.6 MB, downloaded and compiled) | {ms('browser_first_visit_s')} "
        f"(over 20,000 rows: {ctl('browser_first_visit_s')}) |\n"
        f"| same, a returning visit (JS from the browser cache) | {ms('browser_first_page_s')} "
        f"(over 20,000 rows: {ctl('browser_first_page_s')}) |\n"
        f"| series switch in Chromium (pick in the series picker → new chart drawn) | "
        f"{ms('browser_series_switch_s')} (over 20,000 rows: {ctl('browser_series_switch_s')}) |\n\n"
        f"Cold first page by phase (server side, sequential; medians): {phases}. In the browser the "
        "callbacks run concurrently (waitress threads; DuckDB releases the GIL), concurrent requests "
        "for the same period share one summary scan, and `cutstream dashboard` computes the default "
        f"first page once at start, so a first visitor meets the warm path.{browser_note}\n\n"
        f"The table filter is parsed in one linear scan (at most {r['filter_parse_chars_per_input_char']} "
        "characters examined per input character on the hostile texts of `dashboard.testing."
        "hostile_filters`) and refused above 4,096 characters with a message; the regular expression "
        "it replaced took 45 s for a 100 KB filter holding a run of spaces. "
        "`cutstream bench dashboard --filter-only` measures these rows alone over a 20,000-row fixture.\n"
    )


@click.command("dashboard")
@click.option("--rows", type=int, default=10_000_000, show_default=True, help="result rows in the fixture")
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option(
    "--fixture-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the generated fixture is cached (default: the temp dir)",
)
@click.option("--no-http", is_flag=True, help="skip the HTTP round trips")
@click.option("--no-browser", is_flag=True, help="skip the headless Chromium measurement")
@click.option(
    "--filter-only",
    is_flag=True,
    help="only the 100 KB table filter (parser, table view, HTTP) over a 20,000-row fixture",
)
def dashboard_bench(
    rows: int, repeats: int, fixture_dir: Path | None, no_http: bool, no_browser: bool, filter_only: bool
) -> None:
    """Time the dashboard's first page and a series switch over a generated results fixture."""
    if filter_only:
        click.echo(json.dumps(measure_filter(max(repeats, 5), http=not no_http)))
        return
    click.echo(json.dumps(measure(rows, repeats, fixture_dir, http=not no_http, browser=not no_browser)))


COMMANDS = [dashboard_bench]
