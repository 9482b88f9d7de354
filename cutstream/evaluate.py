"""`cutstream evaluate`: a labelled backtest of a detector on the user's own history.

The history goes through ``cutstream backfill``'s path (parse, windows, the detector), nothing is
written, and the results are held against a labels file:

* **labels** (CSV or JSON rows): the dimension values that name the series (any subset of the
  detector's dimensions: ``host=a`` covers every series of host ``a``), an optional ``measure``,
  ``start`` and ``end`` (ISO-8601 or epoch ms; inclusive, as window starts), an optional ``kind``
  and an optional ``expect`` (``anomaly``, the default, or ``normal`` for a stretch that is known
  to be unusual but fine: a batch job, a holiday; alarms there are false alarms counted apart).
* **alarms**: a series' flagged windows (``anomalyDecision = 1``) at most ``merge_gap`` windows
  apart form one alarm, as a person would read them. An alarm is true when it overlaps an anomaly
  label of its series, from the label's start to ``tolerance`` windows after its end.
* **figures**: per kind, recall (labels with a true alarm) and detection delay in windows (from
  the label's start to the first flag); overall, event-level precision (true alarms / alarms),
  recall, F1, false alarms per 1,000 series-windows, false alarms inside each ``normal`` kind;
  a threshold sweep (the recorded anomalyScore re-thresholded; alert suppression as it ran at the
  configured threshold); and the same figures for a **robust z-score baseline** on the same
  windows: ``|value - median| / (1.4826 MAD)`` over the previous ``baseline_window`` windows,
  flagged above 4 and above 6 (and swept).

Windows before ``warmup`` (from each series' first window) are left out of every figure, as NAB
leaves out its probationary period.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

#: Thresholds of the sweep (anomalyScore) and of the baseline (|z|).
SCORE_SWEEP = (30.0, 40.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)
Z_SWEEP = (3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0)
BASELINE_Z = (4.0, 6.0)


class LabelError(ValueError):
    """A labels file that cannot be read (the message names the file and line)."""


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelRow:
    """One labelled stretch of one entity (or of one measure of it)."""

    dims: tuple[tuple[str, str], ...]
    measure: str  # "" = every measure
    start_ms: int
    end_ms: int  # inclusive: the start of the stretch's last window
    kind: str
    expect: str  # "anomaly" or "normal"
    line: int


_RESERVED = {"measure", "start", "end", "kind", "expect"}


def _to_ms(text: Any, where: str) -> int:
    from streams.timestamps import timestamp_to_ms

    value = text
    if isinstance(text, str):
        s = text.strip()
        value = int(s) if s.lstrip("-").isdigit() else s.replace("Z", "+00:00")
    ms = timestamp_to_ms(value)
    if ms is None:
        raise LabelError(f"{where}: {text!r} is not an ISO-8601 time or epoch milliseconds")
    return ms


def load_labels(path: Path, dimensions: Sequence[str] = ()) -> list[LabelRow]:
    """Read a labels file (``.csv`` with a header, or ``.json``: a list of objects).

    Columns other than measure/start/end/kind/expect are dimension values; with ``dimensions``
    given, a column that is not one of them is an error (a typo would match nothing).

    Raises:
        LabelError: the file cannot be read, or a row is not a valid label (with its line).
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
            if isinstance(raw, dict) and "labels" in raw:
                raw = raw["labels"]
            if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
                raise LabelError(f"{path}: expected a JSON list of label objects")
            rows = [(i + 1, r) for i, r in enumerate(raw)]
        else:
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                rows = [(i + 2, dict(r)) for i, r in enumerate(reader)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise LabelError(f"cannot read labels file {path}: {exc}") from exc
    out = []
    for line, r in rows:
        where = f"{path}:{line}" if path.suffix.lower() != ".json" else f"{path}: label {line}"
        if None in r:
            raise LabelError(f"{where}: more values than the header has columns")
        if "start" not in r or "end" not in r:
            raise LabelError(f"{where}: a label needs 'start' and 'end'")
        dims = tuple(sorted((str(k), str(v)) for k, v in r.items() if k not in _RESERVED and v not in (None, "")))
        unknown = [k for k, _ in dims if dimensions and k not in dimensions]
        if unknown:
            raise LabelError(
                f"{where}: {unknown[0]!r} is not a dimension of the detector "
                f"(dimensions: {', '.join(dimensions) or 'none'})"
            )
        start, end = _to_ms(r["start"], where), _to_ms(r["end"], where)
        if end < start:
            raise LabelError(f"{where}: end {r['end']!r} is before start {r['start']!r}")
        expect = str(r.get("expect") or "anomaly").strip().lower()
        if expect not in ("anomaly", "normal"):
            raise LabelError(f"{where}: expect must be 'anomaly' or 'normal', not {expect!r}")
        kind = str(r.get("kind") or ("anomaly" if expect == "anomaly" else "normal")).strip()
        out.append(LabelRow(dims, str(r.get("measure") or "").strip(), start, end, kind, expect, line))
    return out


# --------------------------------------------------------------------------- scored windows


@dataclass
class Scored:
    """Scored windows as columns, sorted by (series, window start).

    Attributes:
        series: int64[n], index into ``keys``/``dims``/``measures``.
        start_ms: int64[n], window start.
        value: float64[n], the window's aggregate.
        score: float64[n], anomalyScore 0-100.
        decision: bool[n], anomalyDecision.
        inference: bool[n], modelStage is INFERENCE.
        extras: extra per-window columns kept for the report (name -> array).
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
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_results(cls, tables: Iterable[pa.Table], window_ms: int) -> Scored:
        """From result-record tables (sinks.record.RESULT_SCHEMA)."""
        table = pa.concat_tables(list(tables))
        if table.num_rows == 0:
            raise LabelError("the history produced no scored windows")
        tsid = table.column("timeseriesId").to_numpy(zero_copy_only=False)
        keys, first, inverse = np.unique(tsid, return_index=True, return_inverse=True)
        dim_lists = table.column("dimensionList").take(pa.array(first)).to_pylist()
        measures = table.column("measure").take(pa.array(first)).to_pylist()
        start = table.column("windowStart").cast(pa.int64()).to_numpy()
        series = inverse.reshape(-1).astype(np.int64)
        order = np.lexsort((start, series))
        extras = {}
        for name in ("rawScore", "expectedValue", "missingWindow"):
            if name in table.column_names:
                extras[name] = table.column(name).to_numpy(zero_copy_only=False)[order]
        return cls(
            window_ms=int(window_ms),
            keys=[str(k) for k in keys],
            dims=[tuple(sorted((d["name"], d["value"]) for d in dl)) for dl in dim_lists],
            measures=[str(m) for m in measures],
            series=series[order],
            start_ms=start[order],
            value=table.column("aggregatedMeasureValue").to_numpy(zero_copy_only=False)[order],
            score=table.column("anomalyScore").to_numpy()[order],
            decision=table.column("anomalyDecision").to_numpy()[order].astype(bool),
            inference=(table.column("modelStage").to_numpy(zero_copy_only=False) == "INFERENCE")[order],
            extras=extras,
        )

    def evaluated(self, warmup_ms: int) -> np.ndarray:
        """bool[n]: the windows counted (after each series' warm-up)."""
        first = np.full(len(self.keys), np.iinfo(np.int64).max)
        np.minimum.at(first, self.series, self.start_ms)
        return self.start_ms >= first[self.series] + warmup_ms


# --------------------------------------------------------------------------- the baseline


def robust_z(scored: Scored, window: int = 60) -> np.ndarray:
    """|z| of each window against the median/MAD of the series' previous ``window`` windows.

    The scale is 1.4826 MAD; where the MAD is 0 (e.g. counts that are mostly zero), the mean
    absolute deviation (x 1.2533) stands in, and where that is 0 too any change is infinitely far.
    The first ``window`` windows of a series have z = 0 (nothing to compare with).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    z = np.zeros(len(scored.series))
    bounds = np.flatnonzero(np.diff(np.r_[-1, scored.series, len(scored.keys) + 1]))
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        x = scored.value[a:b]
        if len(x) <= window:
            continue
        past = sliding_window_view(x[:-1], window)  # past[i] = x[i : i + window], before x[i + window]
        for lo in range(0, len(past), 65536):
            p = past[lo : lo + 65536]
            med = np.median(p, axis=1)
            dev = np.abs(p - med[:, None])
            mad = 1.4826 * np.median(dev, axis=1)
            mean_ad = 1.2533 * dev.mean(axis=1)
            scale = np.where(mad > 0, mad, mean_ad)
            cur = x[window + lo : window + lo + len(p)]
            diff = np.abs(cur - med)
            with np.errstate(divide="ignore", invalid="ignore"):
                zz = np.where(scale > 0, diff / scale, np.where(diff > 0, np.inf, 0.0))
            z[a + window + lo : a + window + lo + len(p)] = zz
    return z


# --------------------------------------------------------------------------- metrics


@dataclass
class KindFigures:
    kind: str
    labels: int
    detected: int
    recall: float
    f1: float
    delay_median: float | None  # windows
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
    false_by_normal: dict[str, int]
    delay_median: float | None

    def kind(self, name: str) -> KindFigures | None:
        return next((k for k in self.kinds if k.kind == name), None)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _matches(labels: Sequence[LabelRow], scored: Scored) -> list[np.ndarray]:
    """For each label, the series it covers (int64 indices)."""
    out = []
    series_dims = [dict(d) for d in scored.dims]
    for lab in labels:
        hit = [
            i
            for i, (d, m) in enumerate(zip(series_dims, scored.measures, strict=True))
            if (not lab.measure or lab.measure == m) and all(d.get(k) == v for k, v in lab.dims)
        ]
        out.append(np.asarray(hit, dtype=np.int64))
    return out


@dataclass
class _Alarms:
    series: np.ndarray  # int64[a]
    first: np.ndarray  # int64[a] window start of the first flag
    last: np.ndarray  # int64[a] window start of the last flag


def alarms_of(scored: Scored, flags: np.ndarray, merge_gap: int) -> _Alarms:
    """Flags at most ``merge_gap`` windows apart within a series, merged into alarms."""
    idx = np.flatnonzero(flags)
    s, t = scored.series[idx], scored.start_ms[idx]
    if len(idx) == 0:
        e = np.zeros(0, dtype=np.int64)
        return _Alarms(e, e, e)
    new = np.r_[True, (s[1:] != s[:-1]) | (t[1:] - t[:-1] > (merge_gap + 1) * scored.window_ms - 1)]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(idx)] - 1
    return _Alarms(s[starts], t[starts], t[ends])


def score_flags(
    name: str,
    scored: Scored,
    flags: np.ndarray,
    labels: Sequence[LabelRow],
    *,
    covers: list[np.ndarray] | None = None,
    merge_gap: int = 5,
    tolerance: int = 5,
    warmup_ms: int = 0,
) -> Figures:
    """Precision, recall, delays and false alarms of ``flags`` (bool per window) against ``labels``."""
    counted = scored.evaluated(warmup_ms)
    flags = np.asarray(flags, dtype=bool) & counted
    covers = covers if covers is not None else _matches(labels, scored)
    w = scored.window_ms
    first_counted = np.full(len(scored.keys), np.iinfo(np.int64).max)
    np.minimum.at(first_counted, scored.series[counted], scored.start_ms[counted])
    alarms = alarms_of(scored, flags, merge_gap)
    true = np.zeros(len(alarms.series), dtype=bool)
    normal_kind = np.full(len(alarms.series), "", dtype=object)
    by_series: dict[int, np.ndarray] = {}
    if len(alarms.series):
        for s in np.unique(alarms.series).tolist():
            by_series[s] = np.flatnonzero(alarms.series == s)
    delays: dict[str, list[float]] = {}
    detected: dict[str, int] = {}
    totals: dict[str, int] = {}
    flag_idx = np.flatnonzero(flags)
    flag_series, flag_t = scored.series[flag_idx], scored.start_ms[flag_idx]
    for lab, cov in zip(labels, covers, strict=True):
        if not len(cov):
            continue
        lo, hi = lab.start_ms, lab.end_ms + tolerance * w
        if lab.expect == "anomaly":
            # A label inside the warm-up (of every series it covers) is not evaluated.
            if lab.end_ms < first_counted[cov].min():
                continue
            totals[lab.kind] = totals.get(lab.kind, 0) + 1
        hit_first: int | None = None
        for s in cov.tolist():
            a = by_series.get(s)
            if a is None:
                continue
            over = (alarms.first[a] <= hi) & (alarms.last[a] >= lo)
            if not over.any():
                continue
            if lab.expect == "anomaly":
                true[a[over]] = True
                sel = (flag_series == s) & (flag_t >= lo - merge_gap * w) & (flag_t <= hi)
                if sel.any():
                    t0 = int(flag_t[sel].min())
                    hit_first = t0 if hit_first is None else min(hit_first, t0)
            else:
                mark = a[over]
                normal_kind[mark] = np.where(normal_kind[mark] == "", lab.kind, normal_kind[mark])
        if lab.expect == "anomaly" and hit_first is not None:
            detected[lab.kind] = detected.get(lab.kind, 0) + 1
            delays.setdefault(lab.kind, []).append(max(0.0, (hit_first - lab.start_ms) / w))
    n_alarms = len(alarms.series)
    n_true = int(true.sum())
    precision = n_true / n_alarms if n_alarms else 1.0
    n_labels = sum(totals.values())
    recall = sum(detected.values()) / n_labels if n_labels else 1.0
    false_by_normal: dict[str, int] = {}
    for k in normal_kind[~true].tolist():
        key = k or "other"
        false_by_normal[key] = false_by_normal.get(key, 0) + 1
    series_windows = int(counted.sum())
    kinds = []
    for kind in sorted(totals):
        r = detected.get(kind, 0) / totals[kind]
        d = delays.get(kind, [])
        kinds.append(
            KindFigures(
                kind,
                totals[kind],
                detected.get(kind, 0),
                r,
                _f1(precision, r),
                float(np.median(d)) if d else None,
                float(np.percentile(d, 90)) if d else None,
            )
        )
    all_delays = [x for d in delays.values() for x in d]
    return Figures(
        name=name,
        alarms=n_alarms,
        true_alarms=n_true,
        false_alarms=n_alarms - n_true,
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        false_alarms_per_1000=1000.0 * (n_alarms - n_true) / series_windows if series_windows else 0.0,
        series_windows=series_windows,
        kinds=kinds,
        false_by_normal=dict(sorted(false_by_normal.items())),
        delay_median=float(np.median(all_delays)) if all_delays else None,
    )


@dataclass
class SweepPoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    false_alarms_per_1000: float


@dataclass
class Evaluation:
    """Everything ``cutstream evaluate`` reports."""

    detector: Figures
    baselines: list[Figures]
    sweep: list[SweepPoint]
    baseline_sweep: list[SweepPoint]
    threshold: float
    settings: dict[str, Any]

    @property
    def best_baseline(self) -> Figures:
        return max(self.baselines, key=lambda f: f.f1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_scored(
    scored: Scored,
    labels: Sequence[LabelRow],
    *,
    threshold: float,
    merge_gap: int = 5,
    tolerance: int = 5,
    warmup_ms: int = 0,
    baseline_window: int = 60,
    name: str = "cutstream",
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """The detector's figures, the baseline's and both sweeps, on the same windows."""
    covers = _matches(labels, scored)
    kw = {"covers": covers, "merge_gap": merge_gap, "tolerance": tolerance, "warmup_ms": warmup_ms}
    det = score_flags(name, scored, scored.decision & scored.inference, labels, **kw)  # type: ignore[arg-type]
    sweep = []
    for thr in SCORE_SWEEP:
        f = score_flags(name, scored, scored.inference & (scored.score > thr), labels, **kw)  # type: ignore[arg-type]
        sweep.append(SweepPoint(thr, f.precision, f.recall, f.f1, f.false_alarms_per_1000))
    if progress:
        progress("baseline")
    z = robust_z(scored, baseline_window)
    baselines = [
        score_flags(f"robust z > {k:g}", scored, z > k, labels, **kw)  # type: ignore[arg-type]
        for k in BASELINE_Z
    ]
    bsweep = []
    for k in Z_SWEEP:
        f = score_flags("z", scored, z > k, labels, **kw)  # type: ignore[arg-type]
        bsweep.append(SweepPoint(k, f.precision, f.recall, f.f1, f.false_alarms_per_1000))
    return Evaluation(
        det,
        baselines,
        sweep,
        bsweep,
        threshold,
        {
            "merge_gap_windows": merge_gap,
            "tolerance_windows": tolerance,
            "warmup_ms": warmup_ms,
            "baseline_window": baseline_window,
            "window_ms": scored.window_ms,
        },
    )


# --------------------------------------------------------------------------- reports


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %" if math.isfinite(x) else "-"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def table(ev: Evaluation) -> str:
    """The report as markdown tables (also what the command prints)."""
    rows = [ev.detector, *ev.baselines]
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
    kinds = sorted({k.kind for f in rows for k in f.kinds})
    lines += [
        "",
        "| kind | labels | " + " | ".join(f"{f.name}: recall, F1, delay" for f in rows) + " |",
        "|---|---:|" + "---:|" * len(rows),
    ]
    for kind in kinds:
        cells = []
        n = 0
        for f in rows:
            k = f.kind(kind)
            if k is None:
                cells.append("-")
                continue
            n = k.labels
            cells.append(f"{_pct(k.recall)}, {k.f1:.2f}, {_num(k.delay_median, '.0f')}")
        lines.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    normals = sorted({k for f in rows for k in f.false_by_normal})
    if normals:
        lines += [
            "",
            "| false alarms where | " + " | ".join(f.name for f in rows) + " |",
            "|---|" + "---:|" * len(rows),
        ]
        for k in normals:
            lines.append(f"| {k} | " + " | ".join(str(f.false_by_normal.get(k, 0)) for f in rows) + " |")
    lines += ["", "| anomalyScore threshold | precision | recall | F1 | false alarms / 1,000 |", "|---:|---:|---:|---:|---:|"]
    for p in ev.sweep:
        mark = " (configured)" if p.threshold == ev.threshold else ""
        lines.append(
            f"| {p.threshold:g}{mark} | {_pct(p.precision)} | {_pct(p.recall)} | {p.f1:.2f} | "
            f"{p.false_alarms_per_1000:.2f} |"
        )
    lines += ["", "| robust z threshold | precision | recall | F1 | false alarms / 1,000 |", "|---:|---:|---:|---:|---:|"]
    for p in ev.baseline_sweep:
        lines.append(
            f"| {p.threshold:g} | {_pct(p.precision)} | {_pct(p.recall)} | {p.f1:.2f} | "
            f"{p.false_alarms_per_1000:.2f} |"
        )
    return "\n".join(lines)


def write_plot(ev: Evaluation, path: Path) -> Path:
    """An HTML page: precision/recall against the threshold for both detectors, recall per kind."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("cutstream: anomalyScore threshold", "robust z baseline: |z| threshold", "recall per kind"),
    )
    for col, sweep in ((1, ev.sweep), (2, ev.baseline_sweep)):
        x = [p.threshold for p in sweep]
        for metric, color in (("precision", "#1f77b4"), ("recall", "#d62728"), ("f1", "#2ca02c")):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[getattr(p, metric) for p in sweep],
                    name=metric,
                    mode="lines+markers",
                    line={"color": color},
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    for f in (ev.detector, ev.best_baseline):
        fig.add_trace(
            go.Bar(x=[k.kind for k in f.kinds], y=[k.recall for k in f.kinds], name=f.name), row=1, col=3
        )
    fig.add_vline(x=ev.threshold, line_dash="dot", row=1, col=1)  # type: ignore[arg-type]
    fig.update_layout(
        title=f"cutstream evaluate: precision {_pct(ev.detector.precision)}, recall "
        f"{_pct(ev.detector.recall)}, F1 {ev.detector.f1:.2f} (best baseline F1 {ev.best_baseline.f1:.2f})",
        height=450,
        width=1400,
        template="plotly_white",
    )
    fig.update_yaxes(range=[0, 1.05])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
