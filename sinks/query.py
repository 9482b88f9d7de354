"""The read side: DuckDB queries over the Parquet results (used by the dashboard and `cutstream query`).

Every query here is a constant SQL text with ``?`` parameters; values from a user (a search text, a
filter value, a series id) are only ever bound as parameters, and identifiers (column names, sort
keys) only ever come from the whitelists below. The only place that runs a user's SQL text is
:func:`run_sql`, which is the `cutstream query` command: the user's own SQL on the user's own files.

Files are listed in Python, not globbed by DuckDB: DuckDB's ``*.parquet`` glob also matches hidden
(dot-prefixed) temporary files of a writer in progress, and listing the ``date=`` directories
ourselves gives partition pruning by period before DuckDB opens anything. The list of files is
passed to ``read_parquet`` as a bound parameter with ``hive_partitioning``.

One in-memory DuckDB database per process holds the Parquet metadata cache; each call opens its own
cursor on it and closes it. Answers (the per-series summary of a period: everything the first page
needs except the chart and the anomaly table; a series' points; an anomaly table) are memoized on
the exact set of files they read (name, size, modification time), so a live refresh that finds
nothing new costs a directory listing, and a new or rewritten file makes them stale at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sinks.errors import SinkError
from sinks.parquet import read_lock
from sinks.record import RESULT_SCHEMA

logger = logging.getLogger(__name__)

RESULTS_DIR = "results"
ALERTS_DIR = "alerts"


class QueryError(SinkError):
    """A query could not run (an unreadable file, a bad SQL text in `cutstream query`)."""


class QueryInputError(QueryError):
    """A user-supplied value (filter, sort key) is not acceptable; the message says why."""


# ---------------------------------------------------------------------------------------------------
# Files and partitions


@dataclass(frozen=True)
class ListedFile:
    """One visible Parquet file of the results tree."""

    path: str
    detector: str
    date: dt.date
    size: int
    mtime_ns: int


def _partition_value(name: str, key: str) -> str | None:
    prefix = key + "="
    return unquote(name[len(prefix) :]) if name.startswith(prefix) else None


def _partition_day(entry: os.DirEntry[str]) -> dt.date | None:
    """The day of a ``date=YYYY-MM-DD`` directory (None for anything else)."""
    day_text = _partition_value(entry.name, "date")
    if day_text is None or not entry.is_dir():
        return None
    try:
        return dt.date.fromisoformat(day_text)
    except ValueError:
        logger.warning("skipping partition with a bad date path=%s", entry.path)
        return None


def _parquet_files(folder: str, detector: str, day: dt.date) -> Iterator[ListedFile]:
    """The visible ``*.parquet`` files of one partition directory."""
    for f in os.scandir(folder):
        if f.name.startswith(".") or not f.name.endswith(".parquet") or not f.is_file():
            continue
        try:
            st = f.stat()
        except FileNotFoundError:  # renamed or deleted by a writer since the listing
            continue
        yield ListedFile(f.path, detector, day, st.st_size, st.st_mtime_ns)


def result_files(
    data_dir: Path | str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    detector: str | None = None,
) -> list[ListedFile]:
    """The visible ``*.parquet`` files under ``<data_dir>/results``, pruned by date and detector.

    Hidden files (a writer's temporaries) and anything not named ``*.parquet`` are skipped. A date
    partition is kept when its day overlaps ``[start, end)``; rows are still filtered by time in SQL.
    """
    root = Path(data_dir) / RESULTS_DIR
    first_day = start.astimezone(dt.UTC).date() if start is not None else None
    last_day = end.astimezone(dt.UTC).date() if end is not None else None
    out: list[ListedFile] = []
    try:
        det_dirs = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for det_entry in det_dirs:
        name = _partition_value(det_entry.name, "detector")
        if name is None or not det_entry.is_dir() or (detector is not None and name != detector):
            continue
        for date_entry in os.scandir(det_entry.path):
            day = _partition_day(date_entry)
            if (
                day is None
                or (first_day is not None and day < first_day)
                or (last_day is not None and day > last_day)
            ):
                continue
            out.extend(_parquet_files(date_entry.path, name, day))
    out.sort(key=lambda r: r.path)
    return out


# ---------------------------------------------------------------------------------------------------
# Connections


_DB_LOCK = threading.Lock()
_DB: duckdb.DuckDBPyConnection | None = None


def _database() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB database (created on first use; holds the metadata cache)."""
    global _DB
    with _DB_LOCK:
        if _DB is None:
            con = duckdb.connect(":memory:")
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET parquet_metadata_cache = true")
            _DB = con
        return _DB


@contextmanager
def _cursor() -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection of its own on the shared database (callbacks run on several threads)."""
    db = _database()
    with _DB_LOCK:  # cursors are created one at a time; each is then used by one thread only
        cur = db.cursor()
    try:
        cur.execute("SET TimeZone = 'UTC'")
        yield cur
    finally:
        cur.close()


#: The results source: the listed files, bound as the first parameter of every query.
_SRC = "read_parquet(?, hive_partitioning = true, union_by_name = true)"

#: The results source with the record's explanation columns always there: files written before the
#: record had them (``anomalyReason``, ``valueScore``, ``forestScore``) read them as NULL, even when no
#: listed file has them (an empty relation that has them is unioned by name).
_SRC_EXPLAINED = (
    "(SELECT * FROM {src} UNION ALL BY NAME SELECT NULL::VARCHAR AS anomalyReason,"
    " NULL::DOUBLE AS valueScore, NULL::DOUBLE AS forestScore WHERE false)"
)


@contextmanager
def _read_lock(data_dir: Path | str) -> Iterator[None]:
    """Hold the Parquet sink's shared read lock (no compaction swap meanwhile) where we can.

    Without write access to the results directory (a read-only mount) the lock cannot be taken;
    the query then runs without it and relies on the retry in :func:`_query`.
    """
    if not (Path(data_dir) / RESULTS_DIR).is_dir():
        yield
        return
    with ExitStack() as stack:
        try:
            stack.enter_context(read_lock(Path(data_dir)))
        except OSError as exc:
            logger.debug("results read lock unavailable data_dir=%s error=%s", data_dir, exc)
        yield


def _query(
    data_dir: Path | str, list_files: Callable[[], list[ListedFile]], sql: str, params: Sequence[Any]
) -> pa.Table | None:
    """List the files and run ``sql`` (``{src}`` = the results source) under the read lock.

    Returns None when there are no files. A file that vanishes between the listing and the read
    (possible only without the lock) makes one retry with a fresh listing.
    """
    with _read_lock(data_dir):
        for attempt in (1, 2):
            files = list_files()
            if not files:
                return None
            try:
                with _cursor() as cur:
                    rel = cur.sql(sql.format(src=_SRC), params=[[f.path for f in files], *params])
                    if rel is None:
                        raise QueryError("query returned no relation")
                    return rel.to_arrow_table()
            except duckdb.IOException as exc:
                if attempt == 2:
                    raise QueryError(f"cannot read the results files: {exc}") from exc
                logger.info("results changed while reading, retrying error=%s", exc)
    return None


# ---------------------------------------------------------------------------------------------------
# Periods and freshness

#: Memoized query results, keyed on the exact files they read (path, size, mtime): a new or
#: rewritten file changes the key, so a cached answer is never stale.
_CACHE_LOCK = threading.Lock()
_SUMMARY_CACHE: OrderedDict[tuple[Any, ...], pa.Table] = OrderedDict()
_NEWEST_CACHE: OrderedDict[tuple[Any, ...], dt.datetime | None] = OrderedDict()
_RESULT_CACHE: OrderedDict[tuple[Any, ...], pa.Table] = OrderedDict()


def _signature(files: Sequence[ListedFile]) -> tuple[tuple[str, int, int], ...]:
    """What identifies the content of a set of files: a new or rewritten file changes it."""
    return tuple((f.path, f.size, f.mtime_ns) for f in files)


_INFLIGHT: dict[tuple[Any, ...], threading.Lock] = {}


def _memo(
    cache: OrderedDict[tuple[Any, ...], Any], key: tuple[Any, ...], compute: Callable[[], Any], size: int = 16
) -> Any:
    """``cache[key]``, computing it once even when several callbacks ask at the same moment."""
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        gate = _INFLIGHT.setdefault(key, threading.Lock())
    with gate:  # the first caller computes; the others wait here and then find the value
        with _CACHE_LOCK:
            if key in cache:
                return cache[key]
        value = compute()
        with _CACHE_LOCK:
            cache[key] = value
            while len(cache) > size:
                cache.popitem(last=False)
            _INFLIGHT.pop(key, None)
    return value


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise QueryInputError("times must be timezone-aware (UTC)")
    return value.astimezone(dt.UTC)


_FAR_PAST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FAR_FUTURE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def _bounds(start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    return _utc(start) or _FAR_PAST, _utc(end) or _FAR_FUTURE


def newest_window(data_dir: Path | str, detector: str | None = None) -> dt.datetime | None:
    """The newest ``windowStart`` in the results (reads only the newest date partition of each detector)."""
    files = result_files(data_dir, detector=detector)
    if not files:
        return None
    newest: dict[str, dt.date] = {}
    for f in files:
        newest[f.detector] = max(newest.get(f.detector, f.date), f.date)

    def recent() -> list[ListedFile]:
        return [
            f for f in result_files(data_dir, detector=detector) if f.date >= newest.get(f.detector, f.date)
        ]

    def compute() -> dt.datetime | None:
        table = _query(data_dir, recent, "SELECT max(windowStart) AS t FROM {src}", [])
        value = None if table is None else table.column("t")[0].as_py()
        return value.astimezone(dt.UTC) if value is not None else None

    key = (str(data_dir), detector, _signature(recent()))
    result: dt.datetime | None = _memo(_NEWEST_CACHE, key, compute)
    return result


def freshness(data_dir: Path | str) -> dict[str, Any]:
    """Age of the newest result file, from file times only (no scan).

    Returns:
        ``{"newest_file_time": datetime | None, "age_s": float | None, "files": int}``.
    """
    files = result_files(data_dir)
    if not files:
        return {"newest_file_time": None, "age_s": None, "files": 0}
    newest_ns = max(f.mtime_ns for f in files)
    return {
        "newest_file_time": dt.datetime.fromtimestamp(newest_ns / 1e9, tz=dt.UTC),
        "age_s": max(0.0, time.time() - newest_ns / 1e9),
        "files": len(files),
    }


# ---------------------------------------------------------------------------------------------------
# Per-series summary of a period (memoized on the files read)


#: Statistics per series (no identity columns: grouping 1.4 M rows by a 64-character id is the
#: cost that matters; carrying the nested dimension list through it added ~40 %).
_SUMMARY_SQL = """
SELECT timeseriesId,
       count(*) AS windows,
       max(anomalyScore) AS maxScore,
       sum(anomalyDecision)::BIGINT AS anomalies,
       arg_max(anomalyConfidenceScore, windowStart) AS confidence,
       max(processedDataPoints) AS processedDataPoints,
       max(windowStart) AS lastWindow
FROM {src}
WHERE windowStart >= ? AND windowStart < ?
GROUP BY timeseriesId
"""

#: Identity of the series (detector, measure, dimensions): read from the newest file of each input
#: source (a flush holds every series active in it), then, for series not in those, from the period.
_IDENTITY_SQL = """
SELECT timeseriesId, any_value(detectorName) AS detectorName, any_value(measure) AS measure,
       any_value(dimensionList) AS dimensionList
FROM {src}
GROUP BY timeseriesId
"""

_IDENTITY_OF_SQL = """
SELECT timeseriesId, any_value(detectorName) AS detectorName, any_value(measure) AS measure,
       any_value(dimensionList) AS dimensionList
FROM {src}
WHERE windowStart >= ? AND windowStart < ? AND timeseriesId IN (SELECT unnest(?::VARCHAR[]))
GROUP BY timeseriesId
"""


def _newest_per_source(files: Sequence[ListedFile]) -> list[ListedFile]:
    """The newest file of each (detector, input source): the sink names files ``<source>-<first>-<last>``."""
    newest: dict[tuple[str, str], ListedFile] = {}
    for f in files:
        key = (f.detector, Path(f.path).name.rsplit("-", 2)[0])
        old = newest.get(key)
        if old is None or (f.date, f.mtime_ns, f.path) > (old.date, old.mtime_ns, old.path):
            newest[key] = f
    return sorted(newest.values(), key=lambda f: f.path)


_SUMMARY_SCHEMA = pa.schema(
    [
        ("timeseriesId", pa.string()),
        ("detectorName", pa.string()),
        ("measure", pa.string()),
        ("dimensionList", RESULT_SCHEMA.field("dimensionList").type),
        ("windows", pa.int64()),
        ("maxScore", pa.float64()),
        ("anomalies", pa.int64()),
        ("confidence", pa.float64()),
        ("processedDataPoints", pa.int64()),
        ("lastWindow", pa.timestamp("us", tz="UTC")),
        ("dimensions", pa.string()),
    ]
)


def clear_cache() -> None:
    """Forget memoized summaries (benchmarks use it to measure a cold first page)."""
    with _CACHE_LOCK:
        _SUMMARY_CACHE.clear()
        _NEWEST_CACHE.clear()
        _RESULT_CACHE.clear()


def dimensions_text(dimension_list: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``[{name, value}, ...]`` → ``"name=value, name=value"`` (for display and type-ahead search)."""
    arr = dimension_list.combine_chunks() if isinstance(dimension_list, pa.ChunkedArray) else dimension_list
    out: list[str] = []
    for dims in arr.to_pylist():
        out.append(", ".join(f"{d['name']}={d['value']}" for d in (dims or [])))
    return pa.array(out, pa.string())


def series_summary(
    data_dir: Path | str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    detector: str | None = None,
) -> pa.Table:
    """One row per series seen in ``[start, end)``: ids, dimensions and the period's statistics.

    Columns: timeseriesId, detectorName, measure, dimensionList, windows, maxScore, anomalies,
    confidence (the series' latest), processedDataPoints (its latest), lastWindow, dimensions (text).
    """
    lo, hi = _bounds(start, end)
    files = result_files(data_dir, start, end, detector)
    if not files:
        return _SUMMARY_SCHEMA.empty_table()
    key = (str(data_dir), lo, hi, detector, _signature(files))

    def compute() -> pa.Table:
        def listing() -> list[ListedFile]:
            return result_files(data_dir, start, end, detector)

        stats = _query(data_dir, listing, _SUMMARY_SQL, [lo, hi])
        if stats is None or stats.num_rows == 0:
            return _SUMMARY_SCHEMA.empty_table()
        ident = _query(data_dir, lambda: _newest_per_source(listing()), _IDENTITY_SQL, [])
        known = set() if ident is None else set(ident.column("timeseriesId").to_pylist())
        missing = [s for s in stats.column("timeseriesId").to_pylist() if s not in known]
        if missing:
            more = _query(data_dir, listing, _IDENTITY_OF_SQL, [lo, hi, missing])
            if more is not None:
                ident = more if ident is None else pa.concat_tables([ident, more.cast(ident.schema)])
        if ident is None:
            return _SUMMARY_SCHEMA.empty_table()
        # a lookup, not Table.join: Arrow's join cannot carry the list-typed dimensionList
        rows = pc.index_in(stats.column("timeseriesId"), value_set=ident.column("timeseriesId"))
        picked = ident.take(rows)
        table = stats
        for name in ("detectorName", "measure", "dimensionList"):
            table = table.append_column(name, picked.column(name))
        table = table.append_column("dimensions", dimensions_text(table.column("dimensionList")))
        return table.select(_SUMMARY_SCHEMA.names).cast(_SUMMARY_SCHEMA)

    summary: pa.Table = _memo(_SUMMARY_CACHE, key, compute)
    return summary


# ---------------------------------------------------------------------------------------------------
# KPIs, catalogue, type-ahead, top series


def kpis(
    data_dir: Path | str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    detector: str | None = None,
) -> dict[str, Any]:
    """The dashboard's headline figures for ``[start, end)``.

    Returns a dict with ``series`` (series tracked), ``windows`` (result rows), ``data_points``
    (sum over series of their model's processedDataPoints), ``anomalies``, ``mean_confidence``
    (mean of each series' latest confidence; None when there are no series), ``newest_window``,
    ``freshness_s`` (age of the newest result file) and ``files``.
    """
    summary = series_summary(data_dir, start, end, detector)
    fresh = freshness(data_dir)
    n = summary.num_rows
    return {
        "series": n,
        "windows": int(pc.sum(summary.column("windows")).as_py() or 0),
        "data_points": int(pc.sum(summary.column("processedDataPoints")).as_py() or 0),
        "anomalies": int(pc.sum(summary.column("anomalies")).as_py() or 0),
        "mean_confidence": float(pc.mean(summary.column("confidence")).as_py()) if n else None,
        "newest_window": pc.max(summary.column("lastWindow")).as_py() if n else None,
        "freshness_s": fresh["age_s"],
        "files": fresh["files"],
    }


def list_detectors(data_dir: Path | str) -> list[str]:
    """Detector names present in the results tree (from the partition directories; no scan)."""
    return sorted({f.detector for f in result_files(data_dir)})


def list_measures(
    data_dir: Path | str,
    detector: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> list[str]:
    """Measures seen in ``[start, end)`` (of ``detector`` when given)."""
    summary = series_summary(data_dir, start, end, detector)
    return sorted(set(summary.column("measure").to_pylist()))


def _select_series(summary: pa.Table, detector: str | None, measure: str | None) -> pa.Table:
    mask = None
    if detector:
        mask = pc.equal(summary.column("detectorName"), detector)
    if measure:
        m = pc.equal(summary.column("measure"), measure)
        mask = m if mask is None else pc.and_(mask, m)
    return summary if mask is None else summary.filter(mask)


def top_series(
    data_dir: Path | str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int = 20,
    detector: str | None = None,
    measure: str | None = None,
) -> pa.Table:
    """The ``limit`` series with the highest max anomalyScore in ``[start, end)``, highest first.

    Columns as :func:`series_summary`. Ties are broken by timeseriesId for a stable order.
    """
    summary = _select_series(series_summary(data_dir, start, end, detector), detector, measure)
    return summary.sort_by([("maxScore", "descending"), ("timeseriesId", "ascending")]).slice(
        0, max(0, limit)
    )


def search_series(
    data_dir: Path | str,
    detector: str | None,
    measure: str | None,
    text: str,
    limit: int = 20,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pa.Table:
    """Type-ahead: series whose dimension text (``name=value, ...``) contains ``text``, case-insensitive.

    The text is matched literally (no pattern characters); results are ordered by max score.
    """
    summary = _select_series(series_summary(data_dir, start, end, detector), detector, measure)
    needle = (text or "").strip().lower()
    if needle:
        hay = pc.utf8_lower(summary.column("dimensions"))
        ids = pc.utf8_lower(summary.column("timeseriesId"))
        mask = pc.or_(pc.match_substring(hay, needle), pc.starts_with(ids, needle))
        summary = summary.filter(mask)
    return summary.sort_by([("maxScore", "descending"), ("timeseriesId", "ascending")]).slice(
        0, max(0, limit)
    )


# ---------------------------------------------------------------------------------------------------
# One series


_POINTS_SQL = """
SELECT windowStart, detectionPeriodStartTime, detectionPeriodEndTime, aggregatedMeasureValue,
       expectedValue, anomalyScore, anomalyDecisionThreshold, anomalyDecision, anomalyConfidenceScore,
       modelStage, processedDataPoints, missingWindow, anomalyReason, valueScore, forestScore
FROM {explained}
WHERE timeseriesId = ? AND windowStart >= ? AND windowStart < ?
ORDER BY windowStart
""".replace("{explained}", _SRC_EXPLAINED)

_POINTS_SCHEMA = pa.schema(
    [
        ("windowStart", pa.timestamp("us", tz="UTC")),
        ("detectionPeriodStartTime", pa.string()),
        ("detectionPeriodEndTime", pa.string()),
        ("aggregatedMeasureValue", pa.float64()),
        ("expectedValue", pa.float64()),
        ("anomalyScore", pa.float64()),
        ("anomalyDecisionThreshold", pa.float64()),
        ("anomalyDecision", pa.int8()),
        ("anomalyConfidenceScore", pa.float64()),
        ("modelStage", pa.string()),
        ("processedDataPoints", pa.int64()),
        ("missingWindow", pa.bool_()),
        ("anomalyReason", pa.string()),
        ("valueScore", pa.float64()),
        ("forestScore", pa.float64()),
    ]
)


def series_points(
    data_dir: Path | str,
    timeseries_id: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    detector: str | None = None,
) -> pa.Table:
    """The results of one series in ``[start, end)``, oldest first (``detector`` prunes the files)."""
    lo, hi = _bounds(start, end)
    files = result_files(data_dir, start, end, detector)
    if not files:
        return _POINTS_SCHEMA.empty_table()

    def compute() -> pa.Table:
        table = _query(
            data_dir,
            lambda: result_files(data_dir, start, end, detector),
            _POINTS_SQL,
            [timeseries_id, lo, hi],
        )
        return _POINTS_SCHEMA.empty_table() if table is None else table.cast(_POINTS_SCHEMA)

    key = ("points", str(data_dir), timeseries_id, lo, hi, detector, _signature(files))
    points: pa.Table = _memo(_RESULT_CACHE, key, compute, size=64)
    return points


def series_info(
    data_dir: Path | str, timeseries_id: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, Any] | None:
    """Detector, measure and dimension text of a series seen in ``[start, end)`` (None if unseen)."""
    summary = series_summary(data_dir, start, end)
    rows = summary.filter(pc.equal(summary.column("timeseriesId"), timeseries_id)).slice(0, 1).to_pylist()
    if not rows:
        return None
    row = rows[0]
    return {k: row[k] for k in ("timeseriesId", "detectorName", "measure", "dimensions", "maxScore")}


# ---------------------------------------------------------------------------------------------------
# Anomalies (filterable, sortable)


#: Columns a user may filter or sort the anomaly table on, with their kind. The SQL expression for
#: each comes from here, never from the user.
ANOMALY_COLUMNS: dict[str, tuple[str, Literal["text", "number", "time"]]] = {
    "windowStart": ("windowStart", "time"),
    "detectionPeriodStartTime": ("detectionPeriodStartTime", "text"),
    "detectorName": ("detectorName", "text"),
    "measure": ("measure", "text"),
    "dimensions": (
        "array_to_string(list_transform(dimensionList, lambda d: d.name || '=' || d.value), ', ')",
        "text",
    ),
    "aggregatedMeasureValue": ("aggregatedMeasureValue", "number"),
    "expectedValue": ("expectedValue", "number"),
    "anomalyScore": ("anomalyScore", "number"),
    "anomalyDecisionThreshold": ("anomalyDecisionThreshold", "number"),
    "anomalyConfidenceScore": ("anomalyConfidenceScore", "number"),
    "anomalyReason": ("anomalyReason", "text"),
    "valueScore": ("valueScore", "number"),
    "forestScore": ("forestScore", "number"),
    "timeseriesId": ("timeseriesId", "text"),
}

_NUMBER_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_TEXT_OPS = {"=", "!=", "contains"}


@dataclass(frozen=True)
class Filter:
    """One condition on the anomaly table: ``column op value``.

    ``op`` is one of ``= != < <= > >=`` (numbers and times) or ``= != contains`` (text; case-insensitive).
    """

    column: str
    op: str
    value: Any


def _filter_sql(f: Filter) -> tuple[str, Any]:
    if f.column not in ANOMALY_COLUMNS:
        raise QueryInputError(f"cannot filter on {f.column!r}; columns: {', '.join(ANOMALY_COLUMNS)}")
    expr, kind = ANOMALY_COLUMNS[f.column]
    if kind == "text":
        if f.op not in _TEXT_OPS:
            raise QueryInputError(f"{f.column}: use =, != or contains for text, not {f.op!r}")
        value = str(f.value).lower()
        if f.op == "contains":
            return f"contains(lower({expr}), ?)", value
        return f"lower({expr}) {_NUMBER_OPS[f.op]} ?", value
    if f.op not in _NUMBER_OPS:
        raise QueryInputError(f"{f.column}: use one of {' '.join(_NUMBER_OPS)}, not {f.op!r}")
    if kind == "number":
        return f"{expr} {_NUMBER_OPS[f.op]} ?", _filter_number(f)
    return f"{expr} {_NUMBER_OPS[f.op]} ?", _filter_time(f)


def _filter_number(f: Filter) -> float:
    try:
        number = float(f.value)
    except (TypeError, ValueError):
        raise QueryInputError(f"{f.column}: {f.value!r} is not a number") from None
    if number != number:  # NaN compares false with everything: surely a typo
        raise QueryInputError(f"{f.column}: {f.value!r} is not a number")
    return number


def _filter_time(f: Filter) -> dt.datetime:
    moment = f.value
    if not isinstance(moment, dt.datetime):
        try:
            moment = dt.datetime.fromisoformat(str(f.value).strip())
        except ValueError:
            raise QueryInputError(
                f"{f.column}: {f.value!r} is not a time (use YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS])"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


_ANOMALIES_SQL = """
SELECT windowStart, detectionPeriodStartTime, detectorName, measure,
       {dims} AS dimensions, aggregatedMeasureValue, expectedValue, anomalyScore,
       anomalyDecisionThreshold, anomalyConfidenceScore, anomalyReason, valueScore, forestScore,
       timeseriesId
FROM {explained}
WHERE anomalyDecision = 1 AND windowStart >= ? AND windowStart < ?{where}
ORDER BY {order}
LIMIT ?
"""

_ANOMALIES_SCHEMA = pa.schema(
    [
        ("windowStart", pa.timestamp("us", tz="UTC")),
        ("detectionPeriodStartTime", pa.string()),
        ("detectorName", pa.string()),
        ("measure", pa.string()),
        ("dimensions", pa.string()),
        ("aggregatedMeasureValue", pa.float64()),
        ("expectedValue", pa.float64()),
        ("anomalyScore", pa.float64()),
        ("anomalyDecisionThreshold", pa.float64()),
        ("anomalyConfidenceScore", pa.float64()),
        ("anomalyReason", pa.string()),
        ("valueScore", pa.float64()),
        ("forestScore", pa.float64()),
        ("timeseriesId", pa.string()),
    ]
)


def anomalies(
    data_dir: Path | str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    filters: Sequence[Filter] = (),
    limit: int = 500,
    order: Sequence[tuple[str, str]] = (("windowStart", "desc"),),
    detector: str | None = None,
) -> pa.Table:
    """Windows with anomalyDecision = 1 in ``[start, end)``, newest first by default.

    Args:
        filters: conditions on :data:`ANOMALY_COLUMNS`; values are bound as parameters.
        order: ``(column, "asc" | "desc")`` pairs on :data:`ANOMALY_COLUMNS`.

    Raises:
        QueryInputError: an unknown column or operator, or a value of the wrong kind.
    """
    if not 0 < limit <= 100_000:
        raise QueryInputError("limit must be between 1 and 100000")
    where, params = [], []
    for f in filters:
        clause, value = _filter_sql(f)
        where.append(clause)
        params.append(value)
    order_sql = []
    for column, direction in order:
        if column not in ANOMALY_COLUMNS or direction not in ("asc", "desc"):
            raise QueryInputError(f"cannot sort by {column!r} {direction!r}")
        order_sql.append(f"{ANOMALY_COLUMNS[column][0]} {direction.upper()} NULLS LAST")
    order_sql.append("windowStart DESC")
    order_sql.append("timeseriesId")
    lo, hi = _bounds(start, end)
    sql = _ANOMALIES_SQL.format(
        explained=_SRC_EXPLAINED,
        dims=ANOMALY_COLUMNS["dimensions"][0],
        where="".join(f" AND {c}" for c in where),
        order=", ".join(order_sql),
    )
    files = result_files(data_dir, start, end, detector)
    if not files:
        return _ANOMALIES_SCHEMA.empty_table()

    def compute() -> pa.Table:
        table = _query(
            data_dir, lambda: result_files(data_dir, start, end, detector), sql, [lo, hi, *params, limit]
        )
        return _ANOMALIES_SCHEMA.empty_table() if table is None else table.cast(_ANOMALIES_SCHEMA)

    key = ("anomalies", str(data_dir), sql, lo, hi, tuple(params), limit, detector, _signature(files))
    rows: pa.Table = _memo(_RESULT_CACHE, key, compute, size=64)
    return rows


# ---------------------------------------------------------------------------------------------------
# Incidents (the alerts outbox) and the worker's status


#: The outbox columns read; everything else comes from ``facts`` (the JSON sent to the hooks).
_INCIDENT_COLUMNS = ("incident_id", "status", "facts", "updated_at")
_INCIDENTS_SCHEMA = pa.schema(
    [
        ("updated", pa.string()),
        ("status", pa.string()),
        ("detector", pa.string()),
        ("measure", pa.string()),
        ("dimensions", pa.string()),
        ("openedAt", pa.string()),
        ("lastAnomalyAt", pa.string()),
        ("anomalousWindows", pa.int64()),
        ("peakScore", pa.float64()),
        ("timeseriesId", pa.string()),
        ("incidentId", pa.string()),
    ]
)


def incidents(data_dir: Path | str, limit: int = 200) -> pa.Table:
    """The alert incidents (sinks.alerts' outbox database under ``<data_dir>/alerts/``), newest first.

    Read-only (``mode=ro``); an absent or foreign database gives an empty table. Columns: updated,
    status, detector, measure, dimensions, openedAt, lastAnomalyAt, anomalousWindows, peakScore,
    timeseriesId, incidentId.
    """
    import json

    alerts = Path(data_dir) / ALERTS_DIR
    paths = sorted([*alerts.glob("*.sqlite3"), *alerts.glob("*.db")]) if alerts.is_dir() else []
    rows: list[dict[str, Any]] = []
    for db in paths:
        try:
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error as exc:
            logger.warning("cannot open alert outbox path=%s error=%s", db, exc)
            continue
        try:
            cols = {r[1] for r in con.execute("SELECT * FROM pragma_table_info('incidents')")}
            if not set(_INCIDENT_COLUMNS) <= cols:
                continue
            cur = con.execute(
                "SELECT incident_id, status, facts, updated_at "
                "FROM incidents ORDER BY updated_at DESC LIMIT ?",
                (limit,),
            )
            for incident_id, status, facts_text, updated_at in cur.fetchall():
                try:
                    facts = json.loads(facts_text)
                except ValueError:
                    facts = {}
                inc = facts.get("incident") or {}
                dims = facts.get("dimensions") or {}
                rows.append(
                    {
                        "updated": dt.datetime.fromtimestamp(float(updated_at), tz=dt.UTC).strftime(
                            "%Y-%m-%d %H:%M:%S"
                        ),
                        "status": status,
                        "detector": facts.get("detector"),
                        "measure": facts.get("measure"),
                        "dimensions": ", ".join(f"{k}={v}" for k, v in sorted(dims.items())),
                        "openedAt": inc.get("openedAt"),
                        "lastAnomalyAt": inc.get("lastAnomalyAt"),
                        "anomalousWindows": inc.get("anomalousWindows"),
                        "peakScore": inc.get("peakScore"),
                        "timeseriesId": facts.get("timeseriesId"),
                        "incidentId": str(incident_id),
                    }
                )
        except sqlite3.Error as exc:
            logger.warning("cannot read alert outbox path=%s error=%s", db, exc)
        finally:
            con.close()
    rows.sort(key=lambda r: r["updated"], reverse=True)
    return pa.Table.from_pylist(rows[:limit], schema=_INCIDENTS_SCHEMA)


STATUS_DIR = "status"
#: A status file older than this is ignored altogether (its figures are too old to show).
STATUS_MAX_AGE_S = 300.0
#: A worker whose status file is older than this is counted as stopped or stale, not running: a live
#: worker rewrites it on every report, about once a second, so this is 15 missed reports (a long
#: scoring pass or checkpoint does not make a busy worker look dead).
WORKER_STALE_S = 15.0
LAG_METRIC = "cutstream_consumer_lag"


def _scrape_lag(url: str, timeout_s: float) -> float | None:
    """Sum of ``cutstream_consumer_lag`` on one worker's Prometheus endpoint (None if unreachable)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        resp = httpx.get(url, timeout=timeout_s)
        resp.raise_for_status()
        total = 0.0
        for family in text_string_to_metric_families(resp.text):
            total += sum(s.value for s in family.samples if s.name == LAG_METRIC)
        return total
    except (httpx.HTTPError, ValueError) as exc:
        logger.debug("worker metrics unavailable url=%s error=%s", url, exc)
        return None


def _status_docs(folder: Path) -> Iterator[tuple[dict[str, Any], float]]:
    """Readable workers' status files in ``folder`` younger than ``STATUS_MAX_AGE_S``, with their age (s)."""
    import json

    now = time.time()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            age = now - path.stat().st_mtime
            if age > STATUS_MAX_AGE_S:
                continue
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.debug("skipping worker status path=%s error=%s", path, exc)
            continue
        if isinstance(doc, dict):
            yield doc, age


def _running(doc: dict[str, Any], age_s: float) -> bool:
    """Whether a status file's worker is running: it said nothing of stopping and wrote it lately."""
    return doc.get("stopped") is not True and age_s <= WORKER_STALE_S


def worker_lag(
    data_dir: Path | str, metrics_urls: Sequence[str] = (), timeout_s: float = 0.5
) -> dict[str, Any] | None:
    """The workers' lag when known, else None.

    Two sources, both optional: the workers' Prometheus endpoints (``metrics_urls``; the gauge
    ``cutstream_consumer_lag``, messages, summed over partitions and workers), and status files
    ``<data_dir>/status/*.json`` (files older than ``STATUS_MAX_AGE_S`` are ignored) with keys
    ``lag_messages`` and/or ``lag_seconds``, or a worker's own status file (``cutstream worker
    --status-file <data_dir>/status/NAME.json``), whose ``latency_ms_p99`` (window closed → result
    written) is kept as ``latency_p99_s``. A status file counts as a running worker only while it is
    younger than ``WORKER_STALE_S`` and does not say ``"stopped": true`` (a worker's last write);
    otherwise its worker is ``stale`` (stopped, killed or hung), and its figures are its last known.

    Returns:
        ``{"messages", "seconds", "latency_p99_s", "workers", "stale"}`` (None for what no source
        gave); ``workers``: running workers (answering endpoints and fresh status files); ``stale``:
        status files of workers that are not.
    """
    messages: list[float] = []
    seconds: list[float] = []
    latency: list[float] = []
    workers = stale = 0
    for url in metrics_urls:
        lag = _scrape_lag(url, timeout_s)
        if lag is not None:
            workers += 1
            messages.append(lag)
    for doc, age_s in _status_docs(Path(data_dir) / STATUS_DIR):
        found = False
        for key, into, scale in (
            ("lag_messages", messages, 1.0),
            ("lag_seconds", seconds, 1.0),
            ("latency_ms_p99", latency, 0.001),
        ):
            value = doc.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                into.append(float(value) * scale)
                found = True
        if found and _running(doc, age_s):
            workers += 1
        elif found:
            stale += 1
    if not (messages or seconds or latency):
        return None
    return {
        "messages": sum(messages) if messages else None,
        "seconds": max(seconds) if seconds else None,
        "latency_p99_s": max(latency) if latency else None,
        "workers": workers,
        "stale": stale,
    }


# ---------------------------------------------------------------------------------------------------
# `cutstream query`


def run_sql(data_dir: Path | str, sql: str) -> pa.Table:
    """Run a user's SQL with a ``results`` view over the results files (`cutstream query`).

    The view is built from the tool's own file listing through DuckDB's relation API (no SQL text is
    assembled). With no results yet, ``results`` is an empty table with the result schema (plus the
    partition columns ``detector`` and ``date``), so a query still runs.

    Raises:
        QueryError: the SQL text does not run (DuckDB's message is kept).
    """
    with _read_lock(data_dir), duckdb.connect(":memory:") as cur:
        # its own database, not the dashboard's shared one: a user's SET or ATTACH stays in this call
        files = result_files(data_dir)
        try:
            cur.execute("SET TimeZone = 'UTC'")
            # no Python variable of this module (a function named `anomalies`...) may stand in for a table
            cur.execute("SET python_enable_replacements = false")
            if files:
                source = cur.read_parquet([f.path for f in files], hive_partitioning=True, union_by_name=True)
            else:
                empty = RESULT_SCHEMA.empty_table()
                empty = empty.append_column("detector", pa.array([], pa.string()))
                empty = empty.append_column("date", pa.array([], pa.date32()))
                source = cur.from_arrow(empty)
            source.create_view("results", replace=True)
            rel = cur.sql(sql)
            return pa.table({}) if rel is None else rel.to_arrow_table()
        except duckdb.CatalogException as exc:
            missing = _MISSING_TABLE.search(str(exc))
            if missing is None:
                raise QueryError(str(exc).strip()) from exc
            raise QueryError(f"there is no table {missing.group(1)!r}: {_ONLY_RESULTS}") from None
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip()) from exc


_ONLY_RESULTS = (
    "the results are the view `results` (its anomalies: ... FROM results WHERE anomalyDecision = 1)"
)
_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")
