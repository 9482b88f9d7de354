"""`cutstream evaluate`: a labelled backtest of a detector on the user's own history.

The history goes through ``cutstream backfill``'s path (parse, windows, the detector; nothing is
written), and the scored windows are held against a labels file:

* **labels** (CSV with a header, or a JSON list of objects): the dimension values that name the
  series (any subset of the detector's dimensions: ``host=a`` covers every series of host ``a``;
  none at all covers every series), an optional ``measure``, ``start`` and ``end`` (ISO-8601 or
  epoch ms; inclusive, as window starts: a window counts as inside when it overlaps
  ``[start, end]``), an optional ``kind`` and an optional ``expect`` (``anomaly``, the default, or
  ``normal`` for a stretch known to be unusual but fine: a batch job, a holiday).
* **alarms**: a series' flagged windows with at most ``merge_gap`` unflagged windows between them
  form one alarm, as a person reads them. An alarm is true when it overlaps an anomaly label of
  its series, from the label's start to ``tolerance`` windows after its end.
* **figures**: per kind, recall (labels with a true alarm), F1 (overall precision with the kind's
  recall: a false alarm has no kind) and detection delay in windows (label start to the first
  flag of the first alarm that overlaps it; 0 when that alarm started earlier); overall,
  event-level precision (true alarms / alarms), recall, F1, false alarms per 1,000 series-windows,
  and where the false alarms fell (inside which ``normal`` kind, or ``other``); a threshold sweep
  (the recorded anomalyScore re-thresholded; suppression and the decision's other filters as they
  ran at the configured threshold); and the same figures for a **robust z-score baseline** on the
  same windows (:func:`robust_z`), flagged above 4 and above 6, and swept.

Windows before ``warmup`` (from each series' first window) are left out of every figure, as NAB
leaves out its probationary period; an anomaly label that ends inside the warm-up is not counted.
With no alarm, precision is 1; with no anomaly label, recall is 1 (nothing to find).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# parse_duration_ms is shared with the config file's *_ms settings; imported here for its old callers
from cutstream.durations import parse_duration_ms as parse_duration_ms

if TYPE_CHECKING:
    from streams.backfill import BackfillReport
    from streams.config import DetectorSpec

#: Thresholds of the sweep (anomalyScore) and of the baseline (|z|).
SCORE_SWEEP = (30.0, 40.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)
Z_SWEEP = (3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0)
BASELINE_Z = (4.0, 6.0)
#: Windows of a series' past that the baseline's median and MAD are taken over.
BASELINE_WINDOW = 60


class EvaluateError(ValueError):
    """An input of the backtest that cannot be used (the message says which, and where)."""


class LabelError(EvaluateError):
    """A labels file that cannot be read (the message names the file and line)."""


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelRow:
    """One labelled stretch of the series its dimension values (and measure) name."""

    dims: tuple[tuple[str, str], ...]
    measure: str  # "" = every measure
    start_ms: int
    end_ms: int  # inclusive: the start of the stretch's last window
    kind: str
    expect: str  # "anomaly" or "normal"
    where: str  # "file:line", for messages

    def text(self) -> str:
        """The label as a person wrote it (for warnings)."""
        names = ", ".join(f"{k}={v}" for k, v in self.dims) or "every series"
        measure = f" {self.measure}" if self.measure else ""
        return f"{self.where} ({names}{measure}, {self.kind})"


_RESERVED = ("measure", "start", "end", "kind", "expect")
_HELP = "a label needs start and end, and names series by dimension columns (optional: measure, kind, expect)"


def _to_ms(value: Any, where: str, name: str) -> int:
    from streams.timestamps import timestamp_to_ms

    v = value
    if isinstance(value, str):
        s = value.strip()
        v = int(s) if s.lstrip("-").isdigit() else s.replace("Z", "+00:00")
    ms = timestamp_to_ms(v)
    if ms is None:
        raise LabelError(f"{where}: {name} {value!r} is not an ISO-8601 time or epoch milliseconds")
    return ms


def _csv_rows(path: Path, text: str, dimensions: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = reader.fieldnames
    if not header:
        raise LabelError(f"{path}: empty ({_HELP})")
    if len(set(header)) != len(header):
        raise LabelError(f"{path}:1: a column name appears twice in the header")
    missing = [c for c in ("start", "end") if c not in header]
    if missing:
        raise LabelError(f"{path}:1: no {missing[0]!r} column in the header ({_HELP})")
    unknown = [c for c in header if dimensions and c not in _RESERVED and c not in dimensions]
    if unknown:
        raise LabelError(_not_a_dimension(f"{path}:1", unknown[0], dimensions))
    for row in reader:
        yield f"{path}:{reader.line_num}", row


def _json_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of a JSON list, each with the line it starts on."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, list):
        raise LabelError(f"{path}:1: expected a JSON list of label objects")
    decoder, pos, lines = json.JSONDecoder(), text.index("[") + 1, []
    for _ in data:  # the text is valid JSON: skip to each element and past it
        while text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        pos = decoder.raw_decode(text, pos)[1]
    for line, obj in zip(lines, data, strict=True):
        if not isinstance(obj, dict):
            raise LabelError(f"{path}:{line}: a label must be a JSON object, not {type(obj).__name__}")
        yield f"{path}:{line}", obj


def _not_a_dimension(where: str, column: str, dimensions: Sequence[str]) -> str:
    return (
        f"{where}: column {column!r} is not a dimension of the detector (dimensions: "
        f"{', '.join(dimensions)}; the other columns are {', '.join(_RESERVED)})"
    )


def _label(where: str, row: dict[str, Any], dimensions: Sequence[str], measures: Sequence[str]) -> LabelRow:
    if any(k is None for k in row):  # csv.DictReader's key for values beyond the header
        raise LabelError(f"{where}: more values than the header has columns")
    for name in ("start", "end"):
        if row.get(name) in (None, ""):
            raise LabelError(f"{where}: no {name} ({_HELP})")
    dims = tuple(
        sorted((str(k), str(v).strip()) for k, v in row.items() if k not in _RESERVED and v not in (None, ""))
    )
    for k, _ in dims:
        if dimensions and k not in dimensions:
            raise LabelError(_not_a_dimension(where, k, dimensions))
    measure = str(row.get("measure") or "").strip()
    if measure and measures and measure not in measures:
        raise LabelError(
            f"{where}: measure {measure!r} is not a measure of the detector (measures: {', '.join(measures)})"
        )
    start, end = _to_ms(row["start"], where, "start"), _to_ms(row["end"], where, "end")
    if end < start:
        raise LabelError(f"{where}: end {row['end']!r} is before start {row['start']!r}")
    expect = str(row.get("expect") or "anomaly").strip().lower()
    if expect not in ("anomaly", "normal"):
        raise LabelError(f"{where}: expect must be 'anomaly' or 'normal', not {expect!r}")
    kind = str(row.get("kind") or "").strip() or expect
    return LabelRow(dims, measure, start, end, kind, expect, where)


def load_labels(path: Path, dimensions: Sequence[str] = (), measures: Sequence[str] = ()) -> list[LabelRow]:
    """Read a labels file: ``.json`` (a list of objects), anything else CSV with a header.

    Columns (keys) other than measure/start/end/kind/expect are dimension values. With
    ``dimensions`` (``measures``) given, a column that is not one of them (a measure that is not
    one of them) is an error: a typo would silently match nothing.

    Raises:
        LabelError: the file cannot be read, or a row is not a valid label (with its line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read labels file {path}: {exc}") from exc
    try:
        rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text, dimensions)
        return [_label(where, row, dimensions, measures) for where, row in rows]
    except csv.Error as exc:
        raise LabelError(f"{path}: not a valid CSV file: {exc}") from exc


# --------------------------------------------------------------------------- scored windows


@dataclass
class Scored:
    """Scored windows as columns, sorted by (series, window start).

    Attributes:
        series: int64[n], index into ``keys``/``dims``/``measures``.
        start_ms: int64[n], window start.
        value: float64[n], the window's aggregate (NaN where it has none).
        score: float64[n], anomalyScore 0-100.
        decision: bool[n], anomalyDecision.
        inference: bool[n], modelStage is INFERENCE.
    """

    window_ms: int
    keys: list[str]
    dims: list[tuple[tuple[str, str], ...]]
    measures: list[str]
    series: np.ndarray
    start_ms: np.ndarray
    value: np.ndarray
    score: np.ndarray
    decision: np.ndarray
    inference: np.ndarray

    @classmethod
    def from_results(cls, tables: Iterable[pa.Table], window_ms: int) -> Scored:
        """From result-record tables (sinks.record.RESULT_SCHEMA)."""
        builder = ScoredBuilder(window_ms)
        for t in tables:
            builder.add(t)
        return builder.build()

    def __len__(self) -> int:
        return len(self.series)

    def evaluated(self, warmup_ms: int) -> np.ndarray:
        """bool[n]: the windows counted (from ``warmup_ms`` after each series' first window)."""
        first = np.full(len(self.keys), np.iinfo(np.int64).max)
        np.minimum.at(first, self.series, self.start_ms)
        return np.asarray(self.start_ms >= first[self.series] + warmup_ms)


class ScoredBuilder:
    """Collects result-record tables step by step, keeping only the columns the figures need."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = int(window_ms)
        self._code: dict[str, int] = {}
        self._dims: list[tuple[tuple[str, str], ...]] = []
        self._measures: list[str] = []
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(self, table: pa.Table) -> None:
        """One table of result records (RESULT_SCHEMA: any chunking, any order)."""
        if table.num_rows == 0:
            return
        enc = pc.dictionary_encode(table.column("timeseriesId")).combine_chunks()
        ids = enc.dictionary.to_pylist()
        indices = enc.indices.to_numpy(zero_copy_only=False)
        new = [i for i, k in enumerate(ids) if k not in self._code]
        if new:
            _, first = np.unique(indices, return_index=True)  # row of each id's first record
            rows = pa.array(first[new])
            dim_lists = table.column("dimensionList").take(rows).to_pylist()
            measures = table.column("measure").take(rows).to_pylist()
            for i, dl, m in zip(new, dim_lists, measures, strict=True):
                self._code[ids[i]] = len(self._dims)
                self._dims.append(tuple(sorted((d["name"], d["value"]) for d in dl)))
                self._measures.append(str(m))
        codes = np.array([self._code[k] for k in ids], dtype=np.int64)
        self._parts.append(
            (
                codes[indices],
                table.column("windowStart").cast(pa.int64()).to_numpy(),
                table.column("aggregatedMeasureValue").to_numpy(zero_copy_only=False).astype(np.float64),
                table.column("anomalyScore").to_numpy().astype(np.float64),
                table.column("anomalyDecision").to_numpy().astype(bool),
                pc.equal(table.column("modelStage"), "INFERENCE").to_numpy(zero_copy_only=False),
            )
        )

    @property
    def windows(self) -> int:
        """Windows added so far."""
        return sum(len(part[0]) for part in self._parts)

    def build(self) -> Scored:
        if not self._parts:
            raise EvaluateError("the history produced no scored windows")
        series, start, value, score, decision, inference = (
            np.concatenate(c) for c in zip(*self._parts, strict=True)
        )
        self._parts = []
        order = np.lexsort((start, series))
        return Scored(
            window_ms=self.window_ms,
            keys=list(self._code),
            dims=self._dims,
            measures=self._measures,
            series=series[order],
            start_ms=start[order],
            value=value[order],
            score=score[order],
            decision=decision[order],
            inference=np.asarray(inference, dtype=bool)[order],
        )


# --------------------------------------------------------------------------- the baseline


@numba.njit(cache=True, nogil=True)
def _insert(buf: np.ndarray, m: int, v: float) -> None:
    """Put ``v`` into the sorted ``buf[:m]`` (room for one more)."""
    j = np.searchsorted(buf[:m], v)
    for q in range(m, j, -1):
        buf[q] = buf[q - 1]
    buf[j] = v


@numba.njit(cache=True, nogil=True)
def _remove(buf: np.ndarray, m: int, v: float) -> None:
    """Take (one copy of) ``v`` out of the sorted ``buf[:m]``."""
    j = np.searchsorted(buf[:m], v)
    for q in range(j, m - 1):
        buf[q] = buf[q + 1]


@numba.njit(cache=True, nogil=True)
def _scale(buf: np.ndarray, m: int, med: float) -> float:
    """1.4826 MAD of the sorted ``buf[:m]`` around its median ``med``; 1.2533 x the mean absolute
    deviation where the MAD is 0. The deviations grow outwards from the median on both sides:
    merging the two runs reaches the middle one in m / 2 steps."""
    right = np.searchsorted(buf[:m], med)
    left = right - 1
    lo_rank, hi_rank = (m - 1) // 2, m // 2
    a = 0.0
    d = 0.0
    for r in range(hi_rank + 1):
        if left >= 0 and (right >= m or med - buf[left] <= buf[right] - med):
            d = med - buf[left]
            left -= 1
        else:
            d = buf[right] - med
            right += 1
        if r == lo_rank:
            a = d
    mad = 0.5 * (a + d)
    if mad > 0.0:
        return 1.4826 * mad
    total = 0.0
    for j in range(m):
        total += abs(buf[j] - med)
    return 1.2533 * total / m


@numba.njit(cache=True, nogil=True)
def _robust_z_kernel(x: np.ndarray, bounds: np.ndarray, window: int, out: np.ndarray) -> None:
    """|z| of every point against the median/MAD of the previous ``window`` points of its series.

    ``bounds[k]:bounds[k + 1]`` is series k. The past's finite values are kept sorted: each step
    removes the point that leaves and inserts the one that enters (O(window) moves), and the
    median is read off the middle.
    """
    buf = np.empty(window + 1)
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        m = 0  # finite values of the past in buf[:m]
        for i in range(lo, hi):
            cur = x[i]
            if i - lo >= window and 2 * m >= window and not np.isnan(cur):
                med = 0.5 * (buf[(m - 1) // 2] + buf[m // 2])
                scale = _scale(buf, m, med)
                diff = abs(cur - med)
                if scale > 0.0:
                    out[i] = diff / scale
                elif diff > 0.0:
                    out[i] = np.inf
            # slide: x[i - window + 1 .. i] is the past of x[i + 1]
            if i - lo >= window and not np.isnan(x[i - window]):
                _remove(buf, m, x[i - window])
                m -= 1
            if not np.isnan(cur):
                _insert(buf, m, cur)
                m += 1


def robust_z(scored: Scored, window: int = BASELINE_WINDOW) -> np.ndarray:
    """float64[n]: |z| of each window against the median/MAD of its series' previous ``window`` windows.

    ``|value - median| / (1.4826 MAD)``; where the MAD is 0 (e.g. counts that are mostly zero),
    the mean absolute deviation (x 1.2533) stands in, and where that is 0 too any change is
    infinitely far. z is 0 for a series' first ``window`` windows (nothing to compare with), for a
    window without a value, and where fewer than half of the previous windows hold one.
    """
    if window < 1:
        raise EvaluateError(f"the baseline window must be at least 1, not {window}")
    z = np.zeros(len(scored.series))
    bounds = np.flatnonzero(np.diff(np.r_[-1, scored.series, -1])).astype(np.int64)
    _robust_z_kernel(np.ascontiguousarray(scored.value, dtype=np.float64), bounds, int(window), z)
    return z


# --------------------------------------------------------------------------- metrics


@dataclass
class KindFigures:
    """One kind of anomaly: how many labels, how many found, how soon (in windows)."""

    kind: str
    labels: int
    detected: int
    recall: float
    f1: float  # overall precision with this kind's recall
    delay_median: float | None
    delay_p90: float | None


@dataclass
class Figures:
    """The figures of one detector (a flag per window) against the labels."""

    name: str
    alarms: int
    true_alarms: int
    false_alarms: int
    precision: float
    recall: float
    f1: float
    false_alarms_per_1000: float
    series_windows: int
    kinds: list[KindFigures]
    false_by_normal: dict[str, int]  # normal kind (or "other") -> false alarms there
    delay_median: float | None

    def kind(self, name: str) -> KindFigures | None:
        return next((k for k in self.kinds if k.kind == name), None)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def match_series(labels: Sequence[LabelRow], scored: Scored) -> list[np.ndarray]:
    """For each label, the series it covers (int64 indices, ascending)."""
    by_pair: dict[tuple[str, str], set[int]] = {}
    by_measure: dict[str, set[int]] = {}
    for i, (dims, measure) in enumerate(zip(scored.dims, scored.measures, strict=True)):
        for pair in dims:
            by_pair.setdefault(pair, set()).add(i)
        by_measure.setdefault(measure, set()).add(i)
    every = set(range(len(scored.keys)))
    out = []
    for lab in labels:
        hit = every if not lab.measure else by_measure.get(lab.measure, set())
        for pair in lab.dims:
            hit = hit & by_pair.get(pair, set())
        out.append(np.array(sorted(hit), dtype=np.int64))
    return out


@dataclass
class Alarms:
    """Merged flags, sorted by (series, first)."""

    series: np.ndarray  # int64[a]
    first: np.ndarray  # int64[a] window start of the first flag
    last: np.ndarray  # int64[a] window start of the last flag

    def __len__(self) -> int:
        return len(self.series)


def alarms_of(scored: Scored, flags: np.ndarray, merge_gap: int) -> Alarms:
    """Flags of one series with at most ``merge_gap`` unflagged windows between them, merged."""
    idx = np.flatnonzero(flags)
    s, t = scored.series[idx], scored.start_ms[idx]
    if len(idx) == 0:
        e = np.zeros(0, dtype=np.int64)
        return Alarms(e, e, e)
    new = np.r_[True, (s[1:] != s[:-1]) | (t[1:] - t[:-1] > (merge_gap + 1) * scored.window_ms)]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(idx)] - 1
    return Alarms(s[starts], t[starts], t[ends])


def _ranges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, owner): every integer of each [a[k], b[k]) and the k it came from."""
    lens = b - a
    owner = np.repeat(np.arange(len(a)), lens)
    pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + a[owner]
    return pos, owner


class Matcher:
    """The labels held against the scored windows: prepared once, then :meth:`figures` per flags.

    A label covers the (label, series) pairs of :func:`match_series`; a pair's stretch is the
    windows overlapping ``[start, end + tolerance windows]``. Alarms and pairs are compared as keys
    ``series * span + time`` (both sorted), so that every pair finds its alarms with two binary
    searches, whatever the number of labels or windows.
    """

    def __init__(
        self,
        scored: Scored,
        labels: Sequence[LabelRow],
        *,
        merge_gap: int = 5,
        tolerance: int = 5,
        warmup_ms: int = 0,
    ) -> None:
        if len(scored) == 0:
            raise EvaluateError("no scored windows to evaluate")
        self.scored, self.labels, self.merge_gap = scored, list(labels), merge_gap
        self.counted = scored.evaluated(warmup_ms)
        covers = match_series(labels, scored)
        self.unmatched = [lab for lab, c in zip(labels, covers, strict=True) if not len(c)]
        w = scored.window_ms
        n_pairs = np.array([len(c) for c in covers], dtype=np.int64)
        self.pair_label = np.repeat(np.arange(len(labels)), n_pairs)
        pair_series = np.concatenate([*covers, np.zeros(0, dtype=np.int64)])
        self.start = np.array([lab.start_ms for lab in labels], dtype=np.int64)
        end = np.array([lab.end_ms for lab in labels], dtype=np.int64)
        self.anomaly = np.array([lab.expect == "anomaly" for lab in labels], dtype=bool)
        self.kind = np.array([lab.kind for lab in labels], dtype=object)
        # keys: series * span + (time - t0), with the stretches' ends clipped into the span
        self.t0 = int(scored.start_ms.min())
        self.span = int(scored.start_ms.max()) - self.t0 + 1
        if (len(scored.keys) + 1) * self.span >= 2**62:
            raise EvaluateError("the history spans too long a time for its number of series")
        lo = np.clip(self.start - w + 1 - self.t0, 0, self.span)
        hi = np.clip(end + tolerance * w - self.t0, -1, self.span - 1)
        self.lo_key = pair_series * self.span + lo[self.pair_label]
        self.hi_key = pair_series * self.span + hi[self.pair_label]
        # an anomaly label is judged when it ends after the warm-up of some series it covers
        big = np.iinfo(np.int64).max
        first_counted = np.full(len(scored.keys), big)
        np.minimum.at(first_counted, scored.series[self.counted], scored.start_ms[self.counted])
        label_first = np.full(len(labels), big)
        np.minimum.at(label_first, self.pair_label, first_counted[pair_series])
        self.judged = self.anomaly & (label_first < big) & (end >= label_first)
        self.kinds = sorted(set(self.kind[self.judged].tolist()))
        self.normal_kinds = sorted(set(self.kind[~self.anomaly & (n_pairs > 0)].tolist()))
        self.series_windows = int(self.counted.sum())

    def figures(self, name: str, flags: np.ndarray) -> Figures:
        """Precision, recall, delays and false alarms of ``flags`` (bool[n], one per window)."""
        alarms = alarms_of(self.scored, np.asarray(flags, dtype=bool) & self.counted, self.merge_gap)
        n = len(alarms)
        a = np.searchsorted(alarms.series * self.span + (alarms.last - self.t0), self.lo_key, "left")
        b = np.searchsorted(alarms.series * self.span + (alarms.first - self.t0), self.hi_key, "right")
        hit = b > a
        anomaly_hit = hit & self.anomaly[self.pair_label]
        edges = np.zeros(n + 1, dtype=np.int64)
        np.add.at(edges, a[anomaly_hit], 1)
        np.add.at(edges, b[anomaly_hit], -1)
        true = np.cumsum(edges)[:n] > 0
        # the first alarm overlapping a pair is its earliest one: its first flag gives the delay
        big = np.iinfo(np.int64).max
        first_flag = np.full(len(self.labels), big)
        np.minimum.at(first_flag, self.pair_label[anomaly_hit], alarms.first[a[anomaly_hit]])
        detected = self.judged & (first_flag < big)
        delay = np.maximum(0, first_flag - self.start) / self.scored.window_ms
        n_true = int(true.sum())
        precision = n_true / n if n else 1.0
        recall = float(detected.sum() / self.judged.sum()) if self.judged.any() else 1.0
        return Figures(
            name=name,
            alarms=n,
            true_alarms=n_true,
            false_alarms=n - n_true,
            precision=precision,
            recall=recall,
            f1=_f1(precision, recall),
            false_alarms_per_1000=1000.0 * (n - n_true) / self.series_windows if self.series_windows else 0.0,
            series_windows=self.series_windows,
            kinds=self._kinds(detected, delay, precision),
            false_by_normal=self._false_where(n, a, b, hit, true),
            delay_median=float(np.median(delay[detected])) if detected.any() else None,
        )

    def _kinds(self, detected: np.ndarray, delay: np.ndarray, precision: float) -> list[KindFigures]:
        out = []
        for kind in self.kinds:
            mine = self.judged & (self.kind == kind)
            found = detected & mine
            r = float(found.sum() / mine.sum())
            d = delay[found]
            out.append(
                KindFigures(
                    kind,
                    int(mine.sum()),
                    int(found.sum()),
                    r,
                    _f1(precision, r),
                    float(np.median(d)) if len(d) else None,
                    float(np.percentile(d, 90)) if len(d) else None,
                )
            )
        return out

    def _false_where(
        self, n: int, a: np.ndarray, b: np.ndarray, hit: np.ndarray, true: np.ndarray
    ) -> dict[str, int]:
        """False alarms per normal kind they overlap (the first such label in file order), or other."""
        normal = hit & ~self.anomaly[self.pair_label]
        pos, owner = _ranges(a[normal], b[normal])
        first_label = np.full(n, len(self.labels))
        np.minimum.at(first_label, pos, self.pair_label[normal][owner])
        out = dict.fromkeys([*self.normal_kinds, "other"], 0)
        for lab in first_label[~true].tolist():
            key = str(self.kind[lab]) if lab < len(self.labels) else "other"
            out[key] += 1
        return out


def score_flags(
    name: str,
    scored: Scored,
    flags: np.ndarray,
    labels: Sequence[LabelRow],
    *,
    merge_gap: int = 5,
    tolerance: int = 5,
    warmup_ms: int = 0,
) -> Figures:
    """Precision, recall, delays and false alarms of ``flags`` (bool per window) against ``labels``."""
    m = Matcher(scored, labels, merge_gap=merge_gap, tolerance=tolerance, warmup_ms=warmup_ms)
    return m.figures(name, flags)


@dataclass
class SweepPoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    false_alarms_per_1000: float
    alarms: int


@dataclass
class Evaluation:
    """Everything ``cutstream evaluate`` reports (:meth:`to_json` is the JSON file)."""

    detector: Figures
    baselines: list[Figures]
    sweep: list[SweepPoint]
    baseline_sweep: list[SweepPoint]
    threshold: float  # the configured threshold (the detector's row uses the recorded decisions)
    settings: dict[str, Any]
    labels: dict[str, Any]
    data: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best_baseline(self) -> Figures:
        return max(self.baselines, key=lambda f: f.f1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        """Back from :meth:`to_json` (e.g. evaluation.json), to print or plot it again."""

        def figures(f: dict[str, Any]) -> Figures:
            return Figures(**{**f, "kinds": [KindFigures(**k) for k in f["kinds"]]})

        return cls(
            detector=figures(data["detector"]),
            baselines=[figures(f) for f in data["baselines"]],
            sweep=[SweepPoint(**p) for p in data["sweep"]],
            baseline_sweep=[SweepPoint(**p) for p in data["baseline_sweep"]],
            threshold=data["threshold"],
            settings=data["settings"],
            labels=data["labels"],
            data=data["data"],
            timings=data.get("timings", {}),
        )


def _sweep(m: Matcher, values: np.ndarray, thresholds: Sequence[float], mask: np.ndarray) -> list[SweepPoint]:
    out = []
    for thr in thresholds:
        f = m.figures("sweep", mask & (values > thr))
        out.append(SweepPoint(thr, f.precision, f.recall, f.f1, f.false_alarms_per_1000, f.alarms))
    return out


def evaluate_scored(
    scored: Scored,
    labels: Sequence[LabelRow],
    *,
    configured_threshold: float,
    threshold: float | None = None,
    merge_gap: int = 5,
    tolerance: int = 5,
    warmup_ms: int = 0,
    baseline_window: int = BASELINE_WINDOW,
    name: str = "cutstream",
) -> Evaluation:
    """The detector's figures, the baseline's and both sweeps, on the same windows.

    The detector's row is the recorded decisions (``anomalyDecision`` in INFERENCE), or, with
    ``threshold``, the recorded anomalyScore above it.
    """
    t0 = time.perf_counter()
    m = Matcher(scored, labels, merge_gap=merge_gap, tolerance=tolerance, warmup_ms=warmup_ms)
    t1 = time.perf_counter()
    flags = scored.inference & (scored.decision if threshold is None else scored.score > threshold)
    row_name = name if threshold is None else f"{name} (anomalyScore > {threshold:g})"
    det = m.figures(row_name, flags)
    sweep = _sweep(m, scored.score, SCORE_SWEEP, scored.inference)
    t2 = time.perf_counter()
    z = robust_z(scored, baseline_window)
    t3 = time.perf_counter()
    every = np.ones(len(scored), dtype=bool)
    baselines = [m.figures(f"robust z > {k:g}", z > k) for k in BASELINE_Z]
    bsweep = _sweep(m, z, Z_SWEEP, every)
    t4 = time.perf_counter()
    return Evaluation(
        det,
        baselines,
        sweep,
        bsweep,
        configured_threshold,
        {
            "merge_gap_windows": merge_gap,
            "tolerance_windows": tolerance,
            "warmup_ms": warmup_ms,
            "baseline_window": baseline_window,
            "window_ms": scored.window_ms,
            "threshold_override": threshold,
        },
        {
            "total": len(m.labels),
            "anomaly": int(m.anomaly.sum()),
            "normal": int((~m.anomaly).sum()),
            "judged": int(m.judged.sum()),
            "unmatched": len(m.unmatched),
            "unmatched_labels": [lab.text() for lab in m.unmatched],
            "kinds": m.kinds,
            "normal_kinds": m.normal_kinds,
        },
        {"series": len(scored.keys), "windows": len(scored), "counted_windows": m.series_windows},
        {
            "match_s": round(t1 - t0, 3),
            "detector_s": round(t2 - t1, 3),
            "robust_z_s": round(t3 - t2, 3),
            "baseline_s": round(t4 - t3, 3),
            "metrics_s": round(t4 - t0, 3),
        },
    )


# --------------------------------------------------------------------------- running it


def score_history(
    path: Path,
    spec: DetectorSpec,
    *,
    backend: str = "cpu",
    on_rows: Callable[[int], None] | None = None,
) -> tuple[Scored | None, BackfillReport]:
    """Every history row under ``path`` through ``cutstream backfill``'s path; nothing is written.

    Returns the scored windows (None when there were none: no valid row) and the backfill's
    report (events, bad rows). ``on_rows(n)``: called after each scoring step with the rows read
    so far (a progress bar).
    """
    from streams.backfill import Backfill

    run = Backfill(Path(path), spec, backend=backend)
    builder = ScoredBuilder(spec.window_ms)
    for step in run.steps():
        builder.add(step.results.table())
        if on_rows is not None:
            on_rows(step.last_row)
    return (builder.build() if builder.windows else None), run.report


def write_json(ev: Evaluation, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ev.to_json(), indent=2, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------------- reports


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %" if math.isfinite(x) else "-"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _summary_table(rows: Sequence[Figures]) -> list[str]:
    lines = [
        "| detector | precision | recall | F1 | alarms (true / false) | false alarms per 1,000 "
        "series-windows | median delay (windows) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in rows:
        lines.append(
            f"| {f.name} | {_pct(f.precision)} | {_pct(f.recall)} | {f.f1:.2f} | {f.alarms} "
            f"({f.true_alarms} / {f.false_alarms}) | {f.false_alarms_per_1000:.2f} | {_num(f.delay_median)} |"
        )
    return lines


def _kind_table(rows: Sequence[Figures]) -> list[str]:
    kinds = sorted({k.kind for f in rows for k in f.kinds})
    lines = [
        "| kind | labels | " + " | ".join(f"{f.name}: recall, F1, delay" for f in rows) + " |",
        "|---|---:|" + "---:|" * len(rows),
    ]
    for kind in kinds:
        cells, n = [], 0
        for f in rows:
            k = f.kind(kind)
            if k is None:
                cells.append("-")
                continue
            n = k.labels
            cells.append(f"{_pct(k.recall)}, {k.f1:.2f}, {_num(k.delay_median, '.0f')}")
        lines.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    return lines


def _sweep_table(title: str, sweep: Sequence[SweepPoint], configured: float | None) -> list[str]:
    lines = [
        f"| {title} | precision | recall | F1 | alarms | false alarms / 1,000 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in sweep:
        mark = " (configured)" if configured is not None and p.threshold == configured else ""
        lines.append(
            f"| {p.threshold:g}{mark} | {_pct(p.precision)} | {_pct(p.recall)} | {p.f1:.2f} | {p.alarms} | "
            f"{p.false_alarms_per_1000:.2f} |"
        )
    return lines


def table(ev: Evaluation, sweeps: bool = True) -> str:
    """The report as markdown tables (what the command prints): overall, per kind, where the false
    alarms fell, and (``sweeps``) both threshold sweeps."""
    rows = [ev.detector, *ev.baselines]
    lines = [*_summary_table(rows), "", *_kind_table(rows)]
    normals = sorted({k for f in rows for k in f.false_by_normal})
    if normals:
        lines += [
            "",
            "| false alarms where | " + " | ".join(f.name for f in rows) + " |",
            "|---|" + "---:|" * len(rows),
        ]
        for k in normals:
            lines.append(f"| {k} | " + " | ".join(str(f.false_by_normal.get(k, 0)) for f in rows) + " |")
    if sweeps:
        lines += ["", *_sweep_table("anomalyScore threshold", ev.sweep, ev.threshold)]
        lines += ["", *_sweep_table("robust z threshold", ev.baseline_sweep, None)]
    return "\n".join(lines)


def write_plot(ev: Evaluation, path: Path) -> Path:
    """An HTML page: precision/recall/F1 against each threshold, precision against recall for both
    detectors, and recall per kind."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=(
            "cutstream: anomalyScore threshold",
            "robust z baseline: |z| threshold",
            "precision against recall",
            "recall per kind",
        ),
    )
    colors = {"precision": "#1f77b4", "recall": "#d62728", "f1": "#2ca02c"}
    for col, sweep in ((1, ev.sweep), (2, ev.baseline_sweep)):
        for metric, color in colors.items():
            fig.add_trace(
                go.Scatter(
                    x=[p.threshold for p in sweep],
                    y=[getattr(p, metric) for p in sweep],
                    name=metric,
                    legendgroup=metric,
                    mode="lines+markers",
                    line={"color": color},
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    for label, sweep, point in (
        (f"{ev.detector.name} (sweep)", ev.sweep, ev.detector),
        ("robust z (sweep)", ev.baseline_sweep, ev.best_baseline),
    ):
        fig.add_trace(
            go.Scatter(
                x=[p.recall for p in sweep],
                y=[p.precision for p in sweep],
                text=[f"{p.threshold:g}" for p in sweep],
                name=label,
                mode="lines+markers",
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=[point.recall],
                y=[point.precision],
                name=point.name,
                mode="markers",
                marker={"size": 14, "symbol": "star"},
            ),
            row=2,
            col=1,
        )
    for f in (ev.detector, ev.best_baseline):
        fig.add_trace(
            go.Bar(x=[k.kind for k in f.kinds], y=[k.recall for k in f.kinds], name=f.name), row=2, col=2
        )
    fig.add_vline(x=ev.threshold, line_dash="dot", row=1, col=1)
    fig.update_layout(
        title=f"cutstream evaluate: precision {_pct(ev.detector.precision)}, recall "
        f"{_pct(ev.detector.recall)}, F1 {ev.detector.f1:.2f} (best baseline, {ev.best_baseline.name}: "
        f"F1 {ev.best_baseline.f1:.2f})",
        height=900,
        width=1300,
        template="plotly_white",
    )
    fig.update_yaxes(range=[0, 1.05])
    fig.update_xaxes(title_text="recall", range=[0, 1.05], row=2, col=1)
    fig.update_yaxes(title_text="precision", row=2, col=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
