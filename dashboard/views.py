"""What each part of the page shows, computed from sinks' query functions (the callbacks only call these).

Periods are relative to the newest result, not to the wall clock, so that replayed history and a live
stream look the same ("the last 24 h of data"). Every function takes the results directory and
plain values from the page, and returns plain values, a Figure, or a message for the user.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

import sinks.query as q
from dashboard import figures
from dashboard.filter_query import parse_filter_query

logger = logging.getLogger(__name__)

PERIODS: dict[str, dt.timedelta | None] = {
    "1h": dt.timedelta(hours=1),
    "6h": dt.timedelta(hours=6),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "all": None,
}
PERIOD_LABELS = {
    "1h": "last hour",
    "6h": "last 6 hours",
    "24h": "last 24 hours",
    "7d": "last 7 days",
    "30d": "last 30 days",
    "all": "all data",
}
DEFAULT_PERIOD = "24h"
TOP_N = 25
TABLE_LIMIT = 500
#: Windows shown on each side of a clicked anomaly.
FOCUS_WINDOWS = 36


@dataclass(frozen=True)
class Period:
    """A resolved period: ``[start, end)`` in UTC, None = unbounded."""

    start: dt.datetime | None
    end: dt.datetime | None


def resolve_period(data_dir: Path | str, period: str | None) -> Period:
    """``"24h"`` → the last 24 h up to the newest result; an unknown name means the default."""
    delta = PERIODS.get(period or DEFAULT_PERIOD, PERIODS[DEFAULT_PERIOD])
    if delta is None:
        return Period(None, None)
    newest = q.newest_window(data_dir)
    if newest is None:
        return Period(None, None)
    return Period(newest - delta + dt.timedelta(microseconds=1), None)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _count(n: int) -> str:
    return f"{n:,}"


def kpi_values(
    data_dir: Path | str, period: str | None, metrics_urls: tuple[str, ...] = ()
) -> list[tuple[str, str, str, str]]:
    """The KPI cards as ``(id, label, text, note)``: series, points, anomalies, confidence, freshness, lag."""
    p = resolve_period(data_dir, period)
    k = q.kpis(data_dir, p.start, p.end)
    lag = q.worker_lag(data_dir, metrics_urls)
    newest = k["newest_window"]
    fresh = _age(k["freshness_s"])
    newest_note = "" if newest is None else f"newest window {newest:%Y-%m-%d %H:%M} UTC"
    conf = "–" if k["mean_confidence"] is None else f"{k['mean_confidence']:.0f} / 100"
    period_label = PERIOD_LABELS.get(period or DEFAULT_PERIOD, str(period))
    return [
        ("kpi-series", "series tracked", _count(k["series"]), period_label),
        ("kpi-points", "data points processed", _count(k["data_points"]), f"{_count(k['windows'])} windows"),
        ("kpi-anomalies", "anomalies", _count(k["anomalies"]), period_label),
        ("kpi-confidence", "mean confidence", conf, "latest, per series"),
        ("kpi-freshness", "data freshness", fresh, newest_note),
        ("kpi-lag", "worker lag", *_lag_card(lag)),
    ]


def _lag_card(lag: dict[str, Any] | None) -> tuple[str, str]:
    """The lag card's value and note: consumer lag first, else the result latency."""
    if lag is None:
        return "unknown", "no worker status or --metrics-url"
    notes = []
    if lag.get("messages") is not None:
        value = f"{int(lag['messages']):,} msgs"
        if lag.get("seconds") is not None:
            notes.append(f"{float(lag['seconds']):.1f} s behind")
    elif lag.get("seconds") is not None:
        value = f"{float(lag['seconds']):.1f} s"
    else:
        value = f"{float(lag['latency_p99_s']):.2f} s"
        notes.append("p99, window close → result")
    notes.append(f"{lag['workers']} worker(s) running")
    if lag.get("stale"):
        notes.append(f"{lag['stale']} stopped/stale (last known figures)")
    return value, " · ".join(notes)


def detector_options(data_dir: Path | str) -> list[dict[str, str]]:
    return [{"label": d, "value": d} for d in q.list_detectors(data_dir)]


def measure_options(data_dir: Path | str, period: str | None, detector: str | None) -> list[dict[str, str]]:
    p = resolve_period(data_dir, period)
    return [{"label": m, "value": m} for m in q.list_measures(data_dir, detector, p.start, p.end)]


def _series_label(row: dict[str, Any]) -> str:
    dims = row["dimensions"] or "(no dimensions)"
    return f"{dims} · {row['measure']} · {row['detectorName']} · max {row['maxScore']:.0f}"


def series_options(
    data_dir: Path | str,
    period: str | None,
    detector: str | None,
    measure: str | None,
    search: str | None,
    selected: str | None,
) -> list[dict[str, str]]:
    """The series picker's options: the top series by max score, or the type-ahead matches.

    The selected series is always kept among the options (a live refresh never drops it).
    """
    p = resolve_period(data_dir, period)
    if search and search.strip():
        table = q.search_series(data_dir, detector, measure, search, TOP_N, p.start, p.end)
    else:
        table = q.top_series(data_dir, p.start, p.end, TOP_N, detector, measure)
    rows = table.select(["timeseriesId", "detectorName", "measure", "dimensions", "maxScore"]).to_pylist()
    options = [{"label": _series_label(r), "value": r["timeseriesId"]} for r in rows]
    if selected and selected not in {o["value"] for o in options}:
        info = q.series_info(data_dir, selected, p.start, p.end) or q.series_info(data_dir, selected)
        label = _series_label(info) if info else f"series {selected[:12]}…"
        options.insert(0, {"label": label, "value": selected})
    return options


def chart_key(series_id: str | None, period: str | None, focus: dict[str, Any] | None) -> str:
    """What a drawn chart shows; a new selection equal to it needs no redraw."""
    import json

    return json.dumps([series_id, period or DEFAULT_PERIOD, focus], sort_keys=True)


def default_series(options: list[dict[str, str]]) -> str | None:
    """The series shown before the user picks one: the top one."""
    return options[0]["value"] if options else None


def chart(
    data_dir: Path | str, period: str | None, series_id: str | None, focus: dict[str, Any] | None
) -> go.Figure:
    """The chart of one series over the period, zoomed around ``focus["time"]`` when it is this series'.

    With no series picked yet it draws the default one (the top series), so the first page's chart
    needs no second round trip.
    """
    p = resolve_period(data_dir, period)
    if not series_id:
        top = q.top_series(data_dir, p.start, p.end, 1)
        if top.num_rows == 0:
            return figures.empty_figure("No results yet: the page fills in when a worker writes some")
        series_id = str(top.column("timeseriesId")[0].as_py())
    info = q.series_info(data_dir, series_id, p.start, p.end) or q.series_info(data_dir, series_id)
    detector = info["detectorName"] if info else None
    span = _focus_span(focus, series_id)
    start = p.start
    if span is not None and span[0] is not None and start is not None and span[0] < start:
        start = _shift(span[0], -dt.timedelta(hours=1))  # an alert link to older data: widen the period
    points = q.series_points(data_dir, series_id, start, p.end, detector)
    zoom = None
    revision = series_id
    if span is not None:
        width = figures.window_width(points) or dt.timedelta(minutes=10)
        lo, hi = span
        if hi is None:  # one window (a clicked row): centre it
            zoom = (_shift(lo, -FOCUS_WINDOWS * width), _shift(lo, FOCUS_WINDOWS * width))
        else:
            zoom = (_shift(lo, -6 * width), _shift(hi, 6 * width))
        if points.num_rows:  # no empty margins beyond the data
            first = points.column("windowStart")[0].as_py()
            last = points.column("windowStart")[-1].as_py()
            zoom = (max(zoom[0], _shift(first, -width)), min(zoom[1], _shift(last, width)))
        revision = f"{series_id}@{lo:%Y-%m-%d %H:%M:%S}"
    title = (
        f"{info['dimensions'] or '(no dimensions)'} — {info['measure']} ({info['detectorName']})"
        if info
        else f"series {series_id[:12]}…"
    )
    return figures.series_figure(points, title=title, focus=zoom, revision=revision)


def _parse_time(text: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(text).strip())
        return t.astimezone(dt.UTC) if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):  # not a time, or one whose UTC form is out of range
        return None


def _shift(t: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    """``t + delta``, clamped to the representable range (an alert link may name year 1 or 9999)."""
    try:
        return t + delta
    except OverflowError:
        return (
            dt.datetime.max.replace(tzinfo=dt.UTC)
            if delta > dt.timedelta(0)
            else dt.datetime.min.replace(tzinfo=dt.UTC)
        )


def _focus_span(
    focus: dict[str, Any] | None, series_id: str
) -> tuple[dt.datetime, dt.datetime | None] | None:
    """``{"series", "time"}`` (one window) or ``{"series", "start", "end"}`` (a range) for this series."""
    if not focus or focus.get("series") != series_id:
        return None
    if focus.get("start"):
        lo, hi = _parse_time(focus["start"]), _parse_time(focus.get("end"))
        return (lo, hi) if lo is not None else None
    t = _parse_time(focus.get("time"))
    return (t, None) if t is not None else None


def focus_from_url(search: str | None) -> dict[str, str] | None:
    """An alert's dashboard link (``?detector=&series=&from=&to=``) → the series and range to open."""
    from urllib.parse import parse_qs

    params = {k: v[0] for k, v in parse_qs((search or "").lstrip("?")).items() if v}
    series = params.get("series", "").strip()
    if not re.fullmatch(r"[0-9a-fA-F]{8,64}", series):
        return None
    focus = {"series": series.lower()}
    if params.get("from") and _parse_time(params["from"]) is not None:
        focus["start"] = params["from"]
        if params.get("to") and _parse_time(params["to"]) is not None:
            focus["end"] = params["to"]
    return focus


# ---------------------------------------------------------------------------------------------------
# The anomaly table


TABLE_COLUMNS: list[tuple[str, str, str]] = [
    ("windowStart", "window start (UTC)", "datetime"),
    ("detectorName", "detector", "text"),
    ("measure", "measure", "text"),
    ("dimensions", "dimensions", "text"),
    ("aggregatedMeasureValue", "value", "numeric"),
    ("expectedValue", "expected", "numeric"),
    ("anomalyScore", "score", "numeric"),
    ("anomalyConfidenceScore", "confidence", "numeric"),
    ("anomalyReason", "why", "text"),
    ("valueScore", "value channel", "numeric"),
    ("forestScore", "forest channel", "numeric"),
]


#: Rows at or above this score are drawn in STRONG_COLOR, bold (the rest: above the threshold).
STRONG_SCORE = 90
STRONG_COLOR = "#b00"
PLAIN_COLOR = "#222"

#: The anomaly table's key: what a row's colour and the "why" words mean.
REASON_KEY: list[tuple[str, str]] = [
    ("value", "the value itself is far from what was expected"),
    ("sustained", "a run of values on one side of the expectation"),
    ("shift", "the level moved and stayed"),
    ("forest", "the shape of the recent values (Random Cut Forest)"),
]


def row_id(series_id: str, window_start: str) -> str:
    return f"{series_id}@{window_start}"


def parse_row_id(value: str) -> tuple[str, str] | None:
    series, sep, when = str(value).partition("@")
    return (series, when) if sep and series and when else None


def anomaly_rows(
    data_dir: Path | str, period: str | None, filter_query: str | None, sort_by: list[dict[str, str]] | None
) -> tuple[list[dict[str, Any]], str]:
    """The anomaly table's rows (newest first unless sorted) and a message ('' when all is well)."""
    p = resolve_period(data_dir, period)
    try:
        filters = parse_filter_query(filter_query)
        order = [(s["column_id"], s.get("direction", "asc")) for s in (sort_by or [])]
        table = q.anomalies(
            data_dir, p.start, p.end, filters, TABLE_LIMIT, order or (("windowStart", "desc"),)
        )
    except q.QueryInputError as exc:
        return [], f"Filter not applied: {exc}"
    times = figures.time_strings(table.column("windowStart"))
    rows = []
    for when, r in zip(times, table.to_pylist(), strict=True):
        rows.append(
            {
                "id": row_id(r["timeseriesId"], when),
                "windowStart": when,
                "detectorName": r["detectorName"],
                "measure": r["measure"],
                "dimensions": r["dimensions"],
                "aggregatedMeasureValue": _round(r["aggregatedMeasureValue"]),
                "expectedValue": _round(r["expectedValue"]),
                "anomalyScore": _round(r["anomalyScore"], 1),
                "anomalyConfidenceScore": _round(r["anomalyConfidenceScore"], 0),
                "anomalyReason": _reason(r["anomalyReason"]),
                "valueScore": _round(r["valueScore"], 1),
                "forestScore": _round(r["forestScore"], 1),
            }
        )
    message = f"showing the first {TABLE_LIMIT} matching anomalies" if len(rows) >= TABLE_LIMIT else ""
    return rows, message


def _reason(reason: str | None) -> str:
    """anomalyReason for the table: '' (no channel stood out) and NULL (older results) say so."""
    if reason is None:
        return "not recorded"
    return reason or "no channel"


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None or v != v else round(float(v), digits)


def focus_from_row(row_key: str | None) -> dict[str, str] | None:
    """A clicked row's id → ``{"series", "time"}`` for the chart (None when it is not a row id)."""
    parsed = parse_row_id(row_key) if row_key else None
    if parsed is None:
        return None
    series, when = parsed
    return {"series": series, "time": when}


INCIDENT_COLUMNS: list[tuple[str, str]] = [
    ("updated", "updated (UTC)"),
    ("status", "status"),
    ("detector", "detector"),
    ("measure", "measure"),
    ("dimensions", "dimensions"),
    ("openedAt", "opened"),
    ("lastAnomalyAt", "last anomaly"),
    ("anomalousWindows", "anomalous windows"),
    ("peakScore", "peak score"),
]


def incident_rows(data_dir: Path | str) -> list[dict[str, Any]]:
    """The incidents table's rows (empty without an alerts outbox); row ids open the incident's span."""
    rows: list[dict[str, Any]] = q.incidents(data_dir, limit=100).to_pylist()
    for r in rows:
        r["id"] = f"{r['timeseriesId']}@{r['openedAt']}@{r['lastAnomalyAt']}"
        if isinstance(r.get("peakScore"), float):
            r["peakScore"] = round(r["peakScore"], 1)  # as the anomaly table shows scores
    return rows


def focus_from_incident(row_key: str | None) -> dict[str, str] | None:
    """An incident row id → the series and its incident's span."""
    parts = str(row_key or "").split("@")
    if len(parts) != 3 or not parts[0]:
        return None
    focus = {"series": parts[0], "start": parts[1]}
    if parts[2] and parts[2] != "None":
        focus["end"] = parts[2]
    return focus


def first_page_parts(
    data_dir: Path | str, period: str = DEFAULT_PERIOD, metrics_urls: tuple[str, ...] = ()
) -> list[tuple[str, Callable[[], Any]]]:
    """The queries of the default first page, by name, in the order the page needs them.

    The app runs them once at start (warm caches for the first visitor); the benchmark times them
    (``dashboard.testing.first_page``).
    """
    return [
        ("kpis", lambda: kpi_values(data_dir, period, metrics_urls)),
        ("top series", lambda: series_options(data_dir, period, None, None, None, None)),
        ("anomaly table", lambda: anomaly_rows(data_dir, period, None, None)),
        ("chart", lambda: chart(data_dir, period, None, None)),
    ]
