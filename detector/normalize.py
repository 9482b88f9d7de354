"""Streaming normalization of raw forest scores into anomalyScore 0–100, a decision and a confidence.

A raw RCF score has no fixed scale: it depends on the series, the forest's size and the shingle.
Each series therefore keeps a few numbers about its own recent raw scores, and a new score is
judged against them, as HTM's "anomaly likelihood" does (the step that took HTM from 53.6 to 70.1 on
NAB):

1. **Smoothing.** ``a_t`` = mean of the last ``avg_points`` raw scores (a short window: one-point
   blips in the raw score are damped, a sustained change is not).
2. **Distribution.** Exponentially weighted mean and variance of ``a`` over the series' history, with
   weight ``max(1/n, 1/history_points)``: the exact running mean and variance at first, forgetting
   slowly once ``history_points`` points have been seen. O(1) state per series (HTM keeps a window of
   8640 scores; a long EW window scored the same on the NAB dev subset and costs 16 bytes).
3. **Surprise.** The Gaussian upper-tail probability ``p = Q((a_t - mean) / std)`` of the new smoothed
   score (only high raw scores are anomalous) becomes ``surprise = -log10(p)`` and
   ``anomalyScore = 100 * min(1, surprise / surprise_at_100)``. With the defaults, 70 means
   ``p ≈ 10^-6``: the score reads the same on every series, whatever its raw scale.
4. **Decision.** ``anomalyDecision = 1`` when ``anomalyScore > threshold`` and the point passes the
   optional filters: ``direction`` (``up``: value above the expected value; ``down``: below) and
   ``min_relative_change`` (``|value - expected| / |expected|`` at least this).
5. **Alert suppression.** After a decision, the series' scores are held at or below
   ``suppress_cap * threshold`` for ``suppress_points`` points: one incident, one alert (HTM filters its
   likelihood the same way). The raw score is still reported as ``rawScore``.

The moments are updated with the current point *after* it is scored, so a point is judged only by
what came before it (causal, and an anomaly cannot hide itself).

State lives in flat per-slot arrays (structure of arrays), so that thousands of series advance in one
compiled loop over the batch's points, in input order (a series may repeat within a batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

#: Version of the per-series normalizer state written by ``NormalizerState.get``.
STATE_VERSION = 1

_NEVER = np.int64(1) << np.int64(40)  # "points since the last alert" for a series that never alerted
_SQRT2 = math.sqrt(2.0)

DIRECTION_CODES = {"both": 0, "up": 1, "down": 2}

#: Buckets of the time-of-day profile behind ``expectedValue`` without shingle context (hours).
TOD_BUCKETS = 24
_MS_PER_DAY = 86_400_000
#: Samples a time-of-day bucket needs before it is trusted over the plain EW level.
_TOD_MIN_COUNT = 3.0


@dataclass(frozen=True)
class NormalizerParams:
    """The scoring stage's parameters, flattened from ``ScoringConfig`` for the compiled loop."""

    threshold: float
    learning_points: int
    direction: int
    min_relative_change: float
    avg_points: int
    raw_log_offset: float
    history_points: float
    value_weight: float
    value_history_points: float
    surprise_at_100: float
    suppress_points: int
    suppress_cap: float
    confidence_points: float
    missing_confidence: float
    suppress_break_sigma: float = 0.0
    spike_weight: float = 0.0


class NormalizerState:
    """Per-slot arrays of the normalizer; a slot is a row, grown on demand.

    Attributes (``C`` = capacity):
        recent: float64[C, avg_points] — the last raw scores (ring buffer).
        mean, var: float64[C] — EW moments of the smoothed raw score.
        n_seen: int64[C] — points processed by the series (``processedDataPoints``).
        since_alert: int64[C] — points since the last decision.
        missing_rate: float64[C] — EW share of missing points over the last ~100.
    """

    def __init__(self, avg_points: int, capacity: int = 64) -> None:
        self.avg_points = avg_points
        self.recent = np.zeros((0, avg_points))
        self.mean = np.zeros(0)
        self.var = np.zeros(0)
        self.n_seen = np.zeros(0, dtype=np.int64)
        self.since_alert = np.zeros(0, dtype=np.int64)
        self.missing_rate = np.zeros(0)
        self.value_mean = np.zeros(0)
        self.value_var = np.zeros(0)
        self.tod_mean = np.zeros((0, TOD_BUCKETS))
        self.tod_count = np.zeros((0, TOD_BUCKETS))
        self.level = np.zeros(0)
        self.level_n = np.zeros(0, dtype=np.int64)
        self.ensure(capacity)

    @property
    def capacity(self) -> int:
        return int(self.mean.shape[0])

    def ensure(self, capacity: int) -> None:
        """Grow the arrays (doubling) so that slots ``< capacity`` exist; new slots are fresh."""
        old = self.capacity
        if capacity <= old:
            return
        new = max(capacity, 2 * old, 16)

        def grow(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, dtype=a.dtype)
            out[:old] = a
            return out

        self.recent = grow(self.recent, 0.0)
        self.mean = grow(self.mean, 0.0)
        self.var = grow(self.var, 0.0)
        self.n_seen = grow(self.n_seen, 0)
        self.since_alert = grow(self.since_alert, _NEVER)
        self.missing_rate = grow(self.missing_rate, 0.0)
        self.value_mean = grow(self.value_mean, 0.0)
        self.value_var = grow(self.value_var, 0.0)
        self.tod_mean = grow(self.tod_mean, 0.0)
        self.tod_count = grow(self.tod_count, 0.0)
        self.level = grow(self.level, 0.0)
        self.level_n = grow(self.level_n, 0)

    def reset(self, slots: np.ndarray) -> None:
        """Make ``slots`` fresh (a new series, or one that was evicted)."""
        self.recent[slots] = 0.0
        self.mean[slots] = 0.0
        self.var[slots] = 0.0
        self.n_seen[slots] = 0
        self.since_alert[slots] = _NEVER
        self.missing_rate[slots] = 0.0
        self.value_mean[slots] = 0.0
        self.value_var[slots] = 0.0
        self.tod_mean[slots] = 0.0
        self.tod_count[slots] = 0.0
        self.level[slots] = 0.0
        self.level_n[slots] = 0

    def get(self, slot: int) -> dict[str, Any]:
        """One series' state as plain JSON-able values."""
        return {
            "version": STATE_VERSION,
            "recent": [float(x) for x in self.recent[slot]],
            "mean": float(self.mean[slot]),
            "var": float(self.var[slot]),
            "n_seen": int(self.n_seen[slot]),
            "since_alert": int(self.since_alert[slot]),
            "missing_rate": float(self.missing_rate[slot]),
            "value_mean": float(self.value_mean[slot]),
            "value_var": float(self.value_var[slot]),
            "tod_mean": [float(x) for x in self.tod_mean[slot]],
            "tod_count": [float(x) for x in self.tod_count[slot]],
            "level": float(self.level[slot]),
            "level_n": int(self.level_n[slot]),
        }

    def put(self, slot: int, state: dict[str, Any]) -> None:
        """Restore one series' state written by ``get`` into ``slot``."""
        from detector.errors import StateVersionError

        if state.get("version") != STATE_VERSION:
            raise StateVersionError(
                f"normalizer state version {state.get('version')!r} is not {STATE_VERSION}; "
                "start the series fresh (drop its checkpoint)"
            )
        recent = np.asarray(state["recent"], dtype=np.float64)
        if recent.shape != (self.avg_points,):
            raise StateVersionError(
                f"normalizer state has {recent.shape[0]} recent scores, this config keeps "
                f"{self.avg_points}; scoring.avg_points changed since the checkpoint"
            )
        self.recent[slot] = recent
        self.mean[slot] = state["mean"]
        self.var[slot] = state["var"]
        self.n_seen[slot] = state["n_seen"]
        self.since_alert[slot] = state["since_alert"]
        self.missing_rate[slot] = state["missing_rate"]
        self.value_mean[slot] = state["value_mean"]
        self.value_var[slot] = state["value_var"]
        if "tod_mean" in state:  # absent in the first states written: the profile starts fresh
            self.tod_mean[slot] = np.asarray(state["tod_mean"], dtype=np.float64)
            self.tod_count[slot] = np.asarray(state["tod_count"], dtype=np.float64)
            self.level[slot] = state["level"]
            self.level_n[slot] = state["level_n"]


@numba.njit(cache=True, nogil=True)
def _surprise(z: float) -> float:
    """-log10 of the standard normal upper tail probability at ``z``."""
    return -math.log10(max(0.5 * math.erfc(z / _SQRT2), 1e-300))


@numba.njit(cache=True, nogil=True)
def _normalize_kernel(
    slots: np.ndarray,
    raw: np.ndarray,
    values: np.ndarray,
    expected: np.ndarray,
    missing: np.ndarray,
    recent: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    n_seen: np.ndarray,
    since_alert: np.ndarray,
    missing_rate: np.ndarray,
    value_mean: np.ndarray,
    value_var: np.ndarray,
    threshold: float,
    learning_points: int,
    direction: int,
    min_relative_change: float,
    raw_log_offset: float,
    history_points: float,
    value_weight: float,
    value_history_points: float,
    surprise_at_100: float,
    suppress_points: int,
    suppress_cap: float,
    confidence_points: float,
    missing_confidence: float,
    suppress_break_sigma: float,
    spike_weight: float,
    score: np.ndarray,
    decision: np.ndarray,
    confidence: np.ndarray,
    inference: np.ndarray,
    processed: np.ndarray,
) -> None:
    k = recent.shape[1]
    for j in range(slots.shape[0]):
        s = slots[j]
        n = n_seen[s]
        r = raw[j]
        if not math.isfinite(r) or r < 0.0:
            r = 0.0
        if raw_log_offset > 0.0:
            r = math.log(r + raw_log_offset)
        recent[s, n % k] = r
        m = min(n + 1, k)
        a = 0.0
        for i in range(m):
            a += recent[s, i]
        a /= m
        v = values[j]
        n += 1
        n_seen[s] = n
        processed[j] = n
        mr = missing_rate[s] + 0.01 * ((1.0 if missing[j] else 0.0) - missing_rate[s])
        missing_rate[s] = mr

        sc = 0.0
        is_inference = n > learning_points
        if is_inference and n > 2:
            # Forest: how unusual is the smoothed raw score for this series (upper tail only).
            sd = math.sqrt(var[s])
            surprise = _surprise((a - mean[s]) / sd) if sd > 0.0 else (300.0 if a > mean[s] else 0.0)
            # Spike: the newest raw score alone, against the smoothed scores' moments widened by
            # the smoothing (a lone spike is diluted k-fold in the average above).
            if spike_weight > 0.0 and sd > 0.0:
                surprise = max(surprise, spike_weight * _surprise((r - mean[s]) / (sd * math.sqrt(k))))
            # Value: how far the value is from the series' long-run level (both tails), weighted
            # down; it catches level shifts and spikes a short forest window has got used to.
            z = 0.0
            vsd = math.sqrt(value_var[s])
            if vsd > 0.0:
                z = abs(v - value_mean[s]) / vsd
                if value_weight > 0.0:
                    surprise = max(surprise, value_weight * (_surprise(z) - math.log10(2.0)))
            sc = 100.0 * min(1.0, max(0.0, surprise / surprise_at_100))
            # During suppression only a value far outside the series' range breaks through: a new
            # spike is reported, the echoes of the last one are not.
            breaks = suppress_break_sigma > 0.0 and z >= suppress_break_sigma
            if since_alert[s] < suppress_points and not breaks:
                sc = min(sc, suppress_cap * threshold)
        dec = 0
        if is_inference and sc > threshold:
            dec = 1
            diff = v - expected[j]
            if direction == 1 and not diff > 0.0:
                dec = 0
            elif direction == 2 and not diff < 0.0:
                dec = 0
            if min_relative_change > 0.0:
                base = abs(expected[j])
                # An expected value of 0 makes any change infinitely large (and no change none).
                rel = abs(diff) / base if base > 0.0 else (math.inf if diff != 0.0 else 0.0)
                if not rel >= min_relative_change:
                    dec = 0
        if dec == 1:
            since_alert[s] = 0
        elif since_alert[s] < _NEVER:
            since_alert[s] += 1
        score[j] = sc
        decision[j] = dec
        inference[j] = is_inference
        conf = 100.0 * min(1.0, n / confidence_points) * (1.0 - mr)
        if missing[j]:
            conf *= missing_confidence
        confidence[j] = conf

        # Update the moments after scoring: a point is judged only by what came before it.
        alpha = max(1.0 / n, 1.0 / history_points)
        d = a - mean[s]
        mean[s] += alpha * d
        var[s] = (1.0 - alpha) * (var[s] + alpha * d * d)
        beta = max(1.0 / n, 1.0 / value_history_points)
        dv = v - value_mean[s]
        value_mean[s] += beta * dv
        value_var[s] = (1.0 - beta) * (value_var[s] + beta * dv * dv)


@numba.njit(cache=True, nogil=True)
def _profile_kernel(
    slots: np.ndarray,
    values: np.ndarray,
    timestamps_ms: np.ndarray,
    tod_mean: np.ndarray,
    tod_count: np.ndarray,
    level: np.ndarray,
    level_n: np.ndarray,
    level_points: float,
    bucket_points: float,
    expected: np.ndarray,
) -> None:
    for j in range(slots.shape[0]):
        s = slots[j]
        v = values[j]
        b = ((timestamps_ms[j] % _MS_PER_DAY) + _MS_PER_DAY) % _MS_PER_DAY * TOD_BUCKETS // _MS_PER_DAY
        if tod_count[s, b] >= _TOD_MIN_COUNT:
            expected[j] = tod_mean[s, b]
        elif level_n[s] > 0:
            expected[j] = level[s]
        else:
            expected[j] = v
        c = tod_count[s, b] + 1.0
        tod_count[s, b] = c
        tod_mean[s, b] += max(1.0 / c, 1.0 / bucket_points) * (v - tod_mean[s, b])
        level_n[s] += 1
        level[s] += max(1.0 / level_n[s], 1.0 / level_points) * (v - level[s])


def profile_expected(
    state: NormalizerState,
    slots: np.ndarray,
    values: np.ndarray,
    timestamps_ms: np.ndarray,
    level_points: float,
    bucket_points: float,
) -> np.ndarray:
    """The expected value of each point from its series' time-of-day profile, then learn the point.

    Each series keeps the EW mean of its values per hour of the day (UTC) and an EW level; a point's
    expectation is its hour's mean once that hour has 3 samples, else the level. This serves as
    ``expectedValue`` when the forest has no context to impute from (shingle size 1).

    Returns:
        float64[n], aligned with the input; the state is advanced in place, in input order.
    """
    n = slots.shape[0]
    out = np.empty(n)
    if n:
        _profile_kernel(
            np.ascontiguousarray(slots, dtype=np.int64),
            np.ascontiguousarray(values, dtype=np.float64),
            np.ascontiguousarray(timestamps_ms, dtype=np.int64),
            state.tod_mean,
            state.tod_count,
            state.level,
            state.level_n,
            float(level_points),
            float(bucket_points),
            out,
        )
    return out


@dataclass
class NormalizedBatch:
    """Outputs of ``normalize`` aligned with the input points."""

    anomaly_score: np.ndarray  # float64[n], 0–100
    decision: np.ndarray  # int8[n]
    confidence: np.ndarray  # float64[n], 0–100
    inference: np.ndarray  # bool[n]
    processed_points: np.ndarray  # int64[n]


def normalize(
    state: NormalizerState,
    params: NormalizerParams,
    slots: np.ndarray,
    raw: np.ndarray,
    values: np.ndarray,
    expected: np.ndarray,
    missing: np.ndarray,
) -> NormalizedBatch:
    """Score a batch of points in input order, advancing each series' normalizer state.

    Args:
        state: the per-slot arrays (updated in place).
        params: the scoring parameters.
        slots: int64[n] slot of each point (a slot may repeat; its points in time order).
        raw: float64[n] raw forest scores.
        values: float64[n] the points' values (after missing-value filling).
        expected: float64[n] the forest's expected values.
        missing: bool[n] the point is a filled-in missing window.

    Returns:
        The normalized outputs, aligned with the input.
    """
    n = slots.shape[0]
    out = NormalizedBatch(
        anomaly_score=np.zeros(n),
        decision=np.zeros(n, dtype=np.int8),
        confidence=np.zeros(n),
        inference=np.zeros(n, dtype=np.bool_),
        processed_points=np.zeros(n, dtype=np.int64),
    )
    if n == 0:
        return out
    _normalize_kernel(
        np.ascontiguousarray(slots, dtype=np.int64),
        np.ascontiguousarray(raw, dtype=np.float64),
        np.ascontiguousarray(values, dtype=np.float64),
        np.ascontiguousarray(expected, dtype=np.float64),
        np.ascontiguousarray(missing, dtype=np.bool_),
        state.recent,
        state.mean,
        state.var,
        state.n_seen,
        state.since_alert,
        state.missing_rate,
        state.value_mean,
        state.value_var,
        float(params.threshold),
        int(params.learning_points),
        int(params.direction),
        float(params.min_relative_change),
        float(params.raw_log_offset),
        float(params.history_points),
        float(params.value_weight),
        float(params.value_history_points),
        float(params.surprise_at_100),
        int(params.suppress_points),
        float(params.suppress_cap),
        float(params.confidence_points),
        float(params.missing_confidence),
        float(params.suppress_break_sigma),
        float(params.spike_weight),
        out.anomaly_score,
        out.decision,
        out.confidence,
        out.inference,
        out.processed_points,
    )
    return out
