"""The Numenta Anomaly Benchmark's scoring rules, re-implemented (no NAB code is included).

The rules follow NAB's ``nab/sweeper.py`` and ``nab/runner.py`` (v1.1, the version behind the
published scoreboard):

* Every labeled window ``[start, end]`` (inclusive, matched by timestamp, first occurrence) spans
  ``width`` rows. A row at index ``i`` inside a window has the relative position
  ``-(right - i + 1) / width`` and the sweep score ``A_TP * S(position) / S(-1)`` with the scaled
  sigmoid ``S(x) = 2 / (1 + exp(5 x)) - 1`` (``-1`` for ``x >= 3``).
* A row outside every window has the relative position ``|prev_right - i| / (prev_width - 1)`` after
  the preceding window (``3.0``, i.e. ``S = -1``, before the first one) and the sweep score
  ``A_FP * S(position)`` (negative).
* The first ``min(floor(0.15 n), 750)`` rows of a file are probationary and are not scored.
* At a threshold ``t`` a row with score ``>= t`` is a detection. A window contributes the best (the
  earliest) detection's sweep score, or ``-A_FN`` when it has none; every detection outside a window
  adds its (negative) sweep score.
* One threshold per profile is chosen for the whole corpus: the exact sweep over every distinct
  score, ties going to the higher threshold, as NAB's optimizer does.
* Normalized score ``100 (raw - raw_null) / (raw_perfect - raw_null)`` with ``raw_perfect`` =
  windows x ``A_TP`` and ``raw_null`` the raw score of the null detector (a constant score).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: NAB's application profiles (config/profiles.json): the weights of TP, FP and FN.
PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}

PROBATION_PERCENT = 0.15


@dataclass(frozen=True)
class DataFile:
    """One NAB series: its relative path (the label key), timestamps, values and windows."""

    name: str
    timestamps: list[str]
    values: np.ndarray  # float64[n]
    windows: list[tuple[str, str]]


@dataclass(frozen=True)
class FileSweep:
    """Per-row scoring material of one file for one profile."""

    sweep: np.ndarray  # float64[n]: the row's weighted score if detected
    window_id: np.ndarray  # int64[n]: window index within the file, -1 outside
    scorable: np.ndarray  # bool[n]: False in the probationary period
    n_windows: int


@dataclass(frozen=True)
class ProfileResult:
    """The corpus result of one profile at its optimal threshold."""

    profile: str
    threshold: float
    raw: float
    raw_null: float
    raw_perfect: float
    score: float
    tp: int
    fp: int
    fn: int


def _strip_fraction(ts: str) -> str:
    return ts.split(".", 1)[0].strip()


def load_corpus(nab_dir: Path, names: Sequence[str] | None = None) -> list[DataFile]:
    """Read ``data/**/*.csv`` and ``labels/combined_windows.json`` under ``nab_dir``.

    Args:
        nab_dir: the NAB copy (``../shared/nab``).
        names: relative paths to keep (default: every file that has a label entry).

    Returns:
        The files in the sorted order of their relative paths.
    """
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    keys = sorted(windows) if names is None else list(names)
    out = []
    for key in keys:
        with (nab_dir / "data" / key).open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            if [h.strip() for h in header[:2]] != ["timestamp", "value"]:
                raise ValueError(f"{key}: expected a 'timestamp,value' header, got {header}")
            rows = [(r[0].strip(), float(r[1])) for r in reader if r]
        wins = [(_strip_fraction(a), _strip_fraction(b)) for a, b in windows.get(key, [])]
        out.append(DataFile(key, [r[0] for r in rows], np.array([r[1] for r in rows]), wins))
    return out


def probationary_length(n_rows: int) -> int:
    """Rows at the start of a file that are not scored: ``min(floor(0.15 n), 750)``."""
    return int(min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_PERCENT * 5000))


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's scaled sigmoid of a relative position (``-1`` at and beyond ``3``)."""
    position = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        s = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position >= 3.0, -1.0, s)


def file_sweep(f: DataFile, weights: Mapping[str, float]) -> FileSweep:
    """The weighted score each row of ``f`` would earn if it were a detection."""
    n = len(f.timestamps)
    first_index: dict[str, int] = {}
    for i, ts in enumerate(f.timestamps):
        first_index.setdefault(ts, i)
    max_tp = float(scaled_sigmoid(np.array(-1.0)))
    sweep = np.empty(n)
    window_id = np.full(n, -1, dtype=np.int64)
    pending = list(f.windows)
    cur: tuple[str, str] | None = None
    cur_right = cur_width = 0.0
    prev_right: int | None = None
    prev_width = 0.0
    wid = -1
    # A per-row loop mirrors NAB's state machine exactly (duplicate timestamps included); it runs
    # once per file and profile, which is cheap next to scoring.
    positions = np.empty(n)
    in_window = np.zeros(n, dtype=bool)
    for i, ts in enumerate(f.timestamps):
        if pending and ts == pending[0][0]:
            cur = pending.pop(0)
            wid += 1
            cur_right = float(first_index[cur[1]])
            cur_width = float(cur_right - first_index[cur[0]] + 1)
        if cur is not None:
            positions[i] = -(cur_right - i + 1) / cur_width
            in_window[i] = True
            window_id[i] = wid
        elif prev_right is None:
            positions[i] = 3.0
        else:
            positions[i] = abs(prev_right - i) / float(prev_width - 1)
        if cur is not None and ts == cur[1]:
            prev_right, prev_width = i, cur_width
            cur = None
    s = scaled_sigmoid(positions)
    sweep = np.where(in_window, s * weights["tp"] / max_tp, s * weights["fp"])
    scorable = np.arange(n) >= probationary_length(n)
    return FileSweep(sweep, window_id, scorable, len(f.windows))


def _events(
    sweeps: Sequence[FileSweep], scores: Sequence[np.ndarray], weights: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """Score changes as the threshold falls past each row: (scores, deltas, base, is_tp, is_fp)."""
    all_s, all_d, all_tp, all_fp = [], [], [], []
    base = 0.0
    for fs, sc in zip(sweeps, scores, strict=True):
        sc = np.asarray(sc, dtype=np.float64)
        if sc.shape != fs.sweep.shape:
            raise ValueError("scores must have one value per row")
        m = fs.scorable
        s, sw, wid = sc[m], fs.sweep[m], fs.window_id[m]
        delta = np.where(wid < 0, sw, 0.0)
        first_in_window = np.zeros(len(s), dtype=bool)
        for w in np.unique(wid[wid >= 0]):
            idx = np.flatnonzero(wid == w)
            order = idx[np.argsort(-s[idx], kind="stable")]
            best = np.maximum.accumulate(np.concatenate(([-weights["fn"]], sw[order])))
            delta[order] = np.diff(best)
            first_in_window[order[0]] = True
            base -= weights["fn"]
        all_s.append(s)
        all_d.append(delta)
        all_tp.append(first_in_window)
        all_fp.append(wid < 0)
    return (
        np.concatenate(all_s),
        np.concatenate(all_d),
        base,
        np.concatenate(all_tp),
        np.concatenate(all_fp),
    )


def sweep_thresholds(
    sweeps: Sequence[FileSweep], scores: Sequence[np.ndarray], weights: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The corpus raw score at every candidate threshold, highest threshold first.

    Returns:
        ``(thresholds, raw_scores)``; the first entry is the threshold 1.1 (no detection).
    """
    s, d, base, _, _ = _events(sweeps, scores, weights)
    order = np.argsort(-s, kind="stable")
    s, d = s[order], d[order]
    cum = base + np.cumsum(d)
    last_of_group = np.ones(len(s), dtype=bool)
    last_of_group[:-1] = s[1:] != s[:-1]
    thresholds = np.concatenate(([1.1], s[last_of_group]))
    raws = np.concatenate(([base], cum[last_of_group]))
    return thresholds, raws


def counts_at(
    sweeps: Sequence[FileSweep], scores: Sequence[np.ndarray], threshold: float
) -> tuple[int, int, int]:
    """Windows detected (TP), detections outside windows (FP) and windows missed (FN) at a threshold."""
    tp = fp = fn = 0
    for fs, sc in zip(sweeps, scores, strict=True):
        det = (np.asarray(sc) >= threshold) & fs.scorable
        fp += int(np.sum(det & (fs.window_id < 0)))
        for w in np.unique(fs.window_id[fs.scorable & (fs.window_id >= 0)]):
            if np.any(det & (fs.window_id == w)):
                tp += 1
            else:
                fn += 1
    return tp, fp, fn


def score_corpus(
    files: Sequence[DataFile], scores: Sequence[np.ndarray], profiles: Sequence[str] = tuple(PROFILES)
) -> dict[str, ProfileResult]:
    """NAB-normalized scores of ``scores`` (one array in [0, 1] per file) for each profile."""
    out = {}
    n_windows = sum(len(f.windows) for f in files)
    for name in profiles:
        w = PROFILES[name]
        sweeps = [file_sweep(f, w) for f in files]
        thresholds, raws = sweep_thresholds(sweeps, scores, w)
        best = int(np.argmax(raws))  # first maximum = the highest threshold among ties
        null_raws = sweep_thresholds(sweeps, [np.full(len(f.timestamps), 0.5) for f in files], w)[1]
        raw_null = float(np.max(null_raws))
        raw_perfect = n_windows * w["tp"]
        raw = float(raws[best])
        tp, fp, fn = counts_at(sweeps, scores, float(thresholds[best]))
        out[name] = ProfileResult(
            profile=name,
            threshold=float(thresholds[best]),
            raw=raw,
            raw_null=raw_null,
            raw_perfect=raw_perfect,
            score=100.0 * (raw - raw_null) / (raw_perfect - raw_null),
            tp=tp,
            fp=fp,
            fn=fn,
        )
    return out
