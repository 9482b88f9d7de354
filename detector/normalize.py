"""The scoring stage around the forest: a series' expected value, anomalyScore 0-100, the decision.

A point is judged by two channels, each on a common scale of *surprise* (``-log10`` of how likely
a point at least this unusual is, for this series):

**The value channel** (``prepare``, before the forest; ``judge``, after it) asks how far the value
is from what this series does at this time:

1. *Transform.* ``x = sign(v) * log(1 + |v| / c)`` with ``c`` the series' typical magnitude
   (mean ``|v|`` of its first points): linear near zero, logarithmic for large values, so that
   heavy-tailed latencies and byte counts are judged in relative terms and a count's noise does
   not grow with its level.
2. *Expected value.* Four models of ``x`` are kept per series and the one that has predicted it
   best is used: the level (an EW mean over ~200 points), the hour of day and the hour of week
   (EW means per bucket over days and weeks, linearly interpolated between bucket centres) and the
   5-minute slot of the day (what the coarse model misses in that slot: sharp daily shapes, a daily
   batch job; so a weekend's slot expects the weekend's level plus the job). The choice is global (which
   model has the lower EW absolute error over the last ~1000 points) and then local: in a week
   hour where the weekly model beats the daily one, or in a day slot where the slot beats the
   rest, that one is used there (weekends, batch jobs); a week hour not yet judged takes the weekly
   model when the daily one missed it badly last week (a series' second weekend). A day slot just
   before or after the point's own, where it holds a rhythm of its own, may explain the point
   instead (a batch job's last minute in the next slot; ``_neighbour_slot``). The scale ``S``
   is the chosen model's EW
   absolute deviation, floored by 70 % of the series' 99th-percentile residual / 2.58 and by 2 %
   of its overall spread (a step in a constant series is not infinitely unusual). An average made
   of fewer events than the series usually has at that hour of day (``events``: a minute's mean
   latency of 2 requests where 40 are usual) is noisier: ``S`` grows by ``sqrt(usual / events)``.
3. *Evidence.* ``z = (x - E) / S``; the instant channel judges ``|z|``, the sustained channel the
   mean of the last 5 residuals (a shift or a silence of a few windows), the shift channel an EW
   mean of the clipped residuals over ~15 points (weighted 0.6; one alert per shift). Each is
   calibrated to the series' own tail: the EW frequency with which it exceeded each of 28 levels
   (over ~10,000 points) replaces the Gaussian tail probability where the series has exceeded that
   level at least 5 times, and the Gaussian shape carries on beyond (``_surprise``). A series whose
   outliers are common thus learns that they are; a series that never had one keeps the Gaussian.
   During an incident the sustained and shift statistics are not learned (a few level shifts must
   not teach a series that the next one is common).

**The forest channel** judges the forest's raw isolation score: the mean of the last 2 raw scores
against their EW mean and variance over ~3000 points (upper tail only), as HTM's anomaly
likelihood does. The forest reads the value with the seasonal part of the expectation removed, so
that the daily rhythm is not news to it. Its evidence counts for a decision only where the value
channel sees the point as at least a little unusual (calibrated surprise 2.5, about p = 0.3 %), and it
is weighted by how often, on this series, its high scores came with such value evidence (a
Bayesian ratio with 3 agreeing points as prior, squared): on a heavy-tailed series where the
forest isolates every large value, its voice fades.

``anomalyScore = 100 * max(channels) / surprise_at_100`` up to 70, then approaching 100 smoothly
(``_to_score``: strong alerts stay ranked); the decision is ``anomalyScore > threshold`` with the
optional ``direction`` and ``min_relative_change`` filters. After an alert a series' scores are held
below the threshold for ``suppress_points`` points (one incident, one alert), unless the incident
ends first (20 points in a row below surprise 3: the next anomaly is a new one) or the value
evidence moves the other way. A series is in ``LEARNING`` (score 0) until it has ``learning_points``
points spanning ``learning_ms`` of event time (or ``learning_max_points`` points).

Each point is judged by what came before it (the models learn after judging: causal), and the
state lives in per-slot arrays so that a batch of many series is one compiled loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numba
import numpy as np

#: Version of the normalizer's per-series state (``NormalizerState.columns``).
STATE_VERSION = 3

DIRECTION_CODES = {"both": 0, "up": 1, "down": 2}
#: ``ScoreBatch.reason`` codes: which channel carried the point's score.
REASONS = ("", "value", "sustained", "forest", "shift")

_NEVER = np.int64(1) << np.int64(40)
_SQRT2 = math.sqrt(2.0)
_MS_HOUR = 3_600_000
_MS_DAY = 86_400_000
_MS_WEEK = 7 * _MS_DAY
_MS_SLOT = 300_000  # the day's fine slots: 5 minutes
_MONDAY = 3 * _MS_DAY  # the epoch was a Thursday: + 3 days puts Monday 00:00 at week hour 0
N_DAY, N_WEEK, N_SLOT = 24, 168, 288
#: Levels at which each channel's exceedance frequency is tracked (calibration).
_LEVELS_LOW = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70]
LEVELS = np.array([*_LEVELS_LOW, 100, 150, 200, 300, 500, 1000], dtype=np.float64)
N_LEVELS = LEVELS.shape[0]
#: Sustained channel: residuals averaged.
MEAN_POINTS = 5
#: Shift channel: EW mean of the clipped residuals over about this many points, weighted.
SHIFT_POINTS = 15.0
_SHIFT_WEIGHT = 0.6
_SHIFT_CLIP = 4.0
_SHIFT_REARM = 2.0  # after an alert the shift channel waits until its mean is back within this
#: An incident ends (its suppression with it) after this many points below this surprise.
_QUIET_LEVEL, _QUIET_POINTS = 3.0, 20
#: Models and their EW horizons.
_LEVEL_POINTS = 200.0  # the level model
_SELECT_POINTS = 1000.0  # the models' errors, for the global choice
_DAY_MEMORY = 3.0  # days, of the hour-of-day profile and the day slots
_WEEK_MEMORY = 2.0  # weeks, of the hour-of-week profile
_MIN_COUNT = 3.0  # samples an hour bucket needs before it predicts
_MIN_SLOT_COUNT = 2.0  # ... and a 5-minute slot
_SELECT_DAY, _SELECT_WEEK, _SELECT_SLOT = 0.8, 0.9, 0.9  # error ratios a finer model must beat
_WEEK_ALONE = 0.3  # a weekly model this much better than the level and the daily one is used alone
_LOCAL_RATIO = 0.7  # ... and locally
_NEIGHBOUR_DISTINCT = 3.0  # a neighbouring day slot this many scales away may explain a point
_CLIP = 4.0  # residuals are clipped at this many scales when they update a model
_SPREAD_POINTS = 2000.0
_SPREAD_FLOOR = 0.02
_Q_LEVEL, _Q_RATE, _Q_FLOOR = 0.99, 0.01, 0.7
_TRANSFORM_POINTS = 64
#: Forest channel.
_RAW_POINTS = 2
_FOREST_HISTORY = 3000.0
#: Calibration.
_CALIB_POINTS = 10_000.0
_CALIB_EVIDENCE = 5.0
#: Forest trust: an alarm-level forest surprise, the value evidence that agrees with it, the prior.
_TRUST_FOREST, _TRUST_VALUE, _TRUST_PRIOR = 6.0, 3.0, 3.0
#: The forest's evidence counts where the value's surprise is at least this (p ~ 1 %) ...
_FOREST_GATE = 2.5
#: ... weighted by its agreement ratio on the series to this power.
_TRUST_POWER = 2.0


@dataclass(frozen=True)
class NormalizerParams:
    """The scoring stage's parameters, flattened from ``ScoringConfig`` for the compiled loops."""

    threshold: float
    learning_points: int
    learning_ms: float
    learning_max_points: int
    direction: int
    min_relative_change: float
    surprise_at_100: float
    suppress_points: int
    suppress_cap: float
    confidence_points: float
    missing_confidence: float
    seasonal: bool
    forest_weight: float
    value_weight: float


class NormalizerState:
    """Per-slot arrays of both passes (structure of arrays); a slot is a row, grown on demand."""

    #: name -> (trailing shape, dtype, fill). Scalars are float64/int64; the profiles float32.
    SPEC: ClassVar[dict[str, tuple[tuple[int, ...], Any, float]]] = {
        # counters and clocks: points processed (processedDataPoints) and points the models learned
        # (they restart at 0 when an older state is upgraded: the models must learn again)
        "n_seen": ((), np.int64, 0),
        "n_model": ((), np.int64, 0),
        "t_first": ((), np.int64, 0),
        "t_last": ((), np.int64, 0),
        "cadence": ((), np.float64, 0.0),
        "c_sum": ((), np.float64, 0.0),
        "c_n": ((), np.int64, 0),
        # level and spread
        "level": ((), np.float64, 0.0),
        "level_dev": ((), np.float64, 0.0),
        "spread_mean": ((), np.float64, 0.0),
        "spread_dev": ((), np.float64, 0.0),
        "q99": ((), np.float64, 0.0),
        # model errors and counts (global choice)
        "err": ((4,), np.float64, 0.0),
        "err_n": ((4,), np.int64, 0),
        # profiles
        "day_mean": ((N_DAY,), np.float32, 0.0),
        "day_dev": ((N_DAY,), np.float32, 0.0),
        "day_n": ((N_DAY,), np.float32, 0.0),
        "week_mean": ((N_WEEK,), np.float32, 0.0),
        "week_dev": ((N_WEEK,), np.float32, 0.0),
        "week_n": ((N_WEEK,), np.float32, 0.0),
        "slot_mean": ((N_SLOT,), np.float32, 0.0),  # the coarse model's residual, from version 4
        "slot_dev": ((N_SLOT,), np.float32, 0.0),
        "slot_n": ((N_SLOT,), np.float32, 0.0),
        # local choice: errors of the slot vs the coarse model per slot, week vs day per week hour
        "slot_err": ((N_SLOT,), np.float32, 0.0),
        "coarse_err": ((N_SLOT,), np.float32, 0.0),
        # an average's typical number of events per hour of day (0: not learned)
        "ev_day": ((N_DAY,), np.float32, 0.0),
        "week_err": ((N_WEEK,), np.float32, 0.0),
        "day_err": ((N_WEEK,), np.float32, 0.0),
        # value channel
        "recent_z": ((MEAN_POINTS,), np.float64, 0.0),
        "ex_value": ((N_LEVELS,), np.float32, 0.0),
        "ex_sustained": ((N_LEVELS,), np.float32, 0.0),
        "shift_z": ((), np.float64, 0.0),
        "shift_armed": ((), np.int64, 1),
        "ex_shift": ((N_LEVELS,), np.float32, 0.0),
        "calib_n": ((), np.int64, 0),
        # forest channel
        "recent_raw": ((_RAW_POINTS,), np.float64, 0.0),
        "raw_mean": ((), np.float64, 0.0),
        "raw_var": ((), np.float64, 0.0),
        "forest_alarms": ((), np.float64, 0.0),
        "forest_agreed": ((), np.float64, 0.0),
        # decisions
        "since_alert": ((), np.int64, int(_NEVER)),
        "alert_sign": ((), np.int64, 0),
        "quiet_n": ((), np.int64, 0),
        "missing_rate": ((), np.float64, 0.0),
    }

    def __init__(self, capacity: int = 64) -> None:
        self.arrays: dict[str, np.ndarray] = {
            name: np.full((0, *shape), fill, dtype=dt) for name, (shape, dt, fill) in self.SPEC.items()
        }
        self.ensure(capacity)

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in arrays:
            out: np.ndarray = arrays[name]
            return out
        raise AttributeError(name)

    @property
    def capacity(self) -> int:
        return int(self.arrays["n_seen"].shape[0])

    def ensure(self, capacity: int) -> None:
        """Grow the arrays (doubling) so that slots ``< capacity`` exist; new slots are fresh."""
        old = self.capacity
        if capacity <= old:
            return
        new = max(capacity, 2 * old, 16)
        for name, (shape, dt, fill) in self.SPEC.items():
            grown = np.full((new, *shape), fill, dtype=dt)
            grown[:old] = self.arrays[name]
            self.arrays[name] = grown

    def reset(self, slots: np.ndarray) -> None:
        """Make ``slots`` fresh (a new series, or one that was evicted)."""
        for name, (_, _, fill) in self.SPEC.items():
            self.arrays[name][slots] = fill

    def columns(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The state of ``slots`` as named arrays (copies; one row per slot)."""
        return {name: self.arrays[name][slots].copy() for name in self.SPEC}

    def put_columns(self, slots: np.ndarray, columns: dict[str, Any]) -> None:
        """Restore what :meth:`columns` returned into ``slots``."""
        from detector.errors import StateVersionError

        for name, (shape, dt, _) in self.SPEC.items():
            if name not in columns:
                raise StateVersionError(
                    f"normalizer state field {name} is missing: the checkpoint is corrupt or from "
                    "another version"
                )
            arr = np.asarray(columns[name], dtype=dt)
            if arr.shape != (slots.shape[0], *shape):
                raise StateVersionError(
                    f"normalizer state field {name} has shape {arr.shape}, expected "
                    f"{(slots.shape[0], *shape)}: the checkpoint is corrupt or from another version"
                )
            self.arrays[name][slots] = arr

    @property
    def bytes_per_series(self) -> int:
        return sum(
            int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt, _ in self.SPEC.values()
        )


# --------------------------------------------------------------------------------------------------
# Tail probabilities


@numba.njit(cache=True, nogil=True)
def _log_tail(z: float, two_sided: bool) -> float:
    """log10 of the standard normal tail beyond ``z`` (both tails when ``two_sided``)."""
    p = 0.5 * math.erfc(z / _SQRT2)
    if two_sided:
        p *= 2.0
    return math.log10(max(p, 1e-300))


@numba.njit(cache=True, nogil=True)
def _surprise(x: float, ex: np.ndarray, n: int) -> float:
    """-log10 p of a statistic ``x >= 0`` (two-sided): the Gaussian tail, or the series' own.

    The highest level below ``x`` that the series exceeded at least ``_CALIB_EVIDENCE`` times (EW
    frequency ``ex`` over ~``_CALIB_POINTS`` points) anchors the tail; from there the Gaussian
    shape carries on: ``p = max(gauss(x), ex[j] * gauss(x) / gauss(L_j))``. Rare events stay as
    surprising as the Gaussian says; common ones are discounted. (Carrying on with the series' own
    decay instead -- a Gaussian or an exponential shape fitted between half the anchor level and
    the anchor -- halved the false alarms on Student-t noise but cost 0.15 of the suite's recall
    and 8 NAB points: the extreme values of real anomalies were discounted too.)
    """
    lg = _log_tail(x, True)
    if n <= 0:
        return -lg
    neff = min(float(n), _CALIB_POINTS)
    j_star = -1
    for j in range(N_LEVELS):
        if LEVELS[j] > x:
            break
        if ex[j] * neff >= _CALIB_EVIDENCE:
            j_star = j
    if j_star < 0:
        return -lg
    cand = math.log10(max(float(ex[j_star]), 1e-300)) + (lg - _log_tail(LEVELS[j_star], True))
    return -max(lg, cand)


@numba.njit(cache=True, nogil=True)
def _learn_tail(ex: np.ndarray, s: int, x: float, w: float) -> None:
    for j in range(N_LEVELS):
        ex[s, j] += w * ((1.0 if x >= LEVELS[j] else 0.0) - ex[s, j])


# --------------------------------------------------------------------------------------------------
# Pass A: the value's expectation (runs before the forest, which reads the adjusted value)


@numba.njit(cache=True, nogil=True)
def _interp(
    means: np.ndarray, devs: np.ndarray, counts: np.ndarray, s: int, nb: int, pos: float
) -> tuple[bool, float, float]:
    """(ok, mean, scale) of a cyclic profile at position ``pos`` (bucket units, centres at +0.5)."""
    p = pos - 0.5
    if p < 0.0:
        p += nb
    b0 = int(p) % nb
    b1 = (b0 + 1) % nb
    f = p - math.floor(p)
    if counts[s, b0] >= _MIN_COUNT and counts[s, b1] >= _MIN_COUNT:
        m = (1.0 - f) * means[s, b0] + f * means[s, b1]
        d = 1.2533 * ((1.0 - f) * devs[s, b0] + f * devs[s, b1])
        return True, float(m), float(d)
    return False, 0.0, 0.0


@numba.njit(cache=True, nogil=True)
def _ew(
    mean: np.ndarray,
    dev: np.ndarray,
    count: np.ndarray,
    s: int,
    b: int,
    x: float,
    w: float,
    cap: float,
    dev0: float,
    e: float,
) -> None:
    """Learn ``x`` into bucket ``b`` of a profile (EW mean and absolute deviation, clipped); a new
    bucket starts at ``x`` (clipped around the point's expectation ``e``) with the level's
    deviation ``dev0``."""
    c = count[s, b] + 1.0
    count[s, b] = c
    if c == 1.0:
        mean[s, b] = min(max(x, e - cap), e + cap)
        dev[s, b] = dev0
        return
    xb = min(max(x, mean[s, b] - cap), mean[s, b] + cap)
    d = xb - mean[s, b]
    mean[s, b] += w * d
    dev[s, b] += w * (abs(d) - dev[s, b])


@numba.njit(cache=True, nogil=True, parallel=True)
def _prepare_kernel(  # type: ignore[no-untyped-def]  # numba infers the types
    order, starts, slots, values, ts, events, seasonal,
    n_seen, n_model, t_first, t_last, cadence, c_sum, c_n, level, level_dev, spread_mean, spread_dev, q99,
    err, err_n, day_mean, day_dev, day_n, week_mean, week_dev, week_n, slot_mean, slot_dev, slot_n,
    slot_err, coarse_err, week_err, day_err, ev_day,
    out_z, out_exp, out_scale, out_adj, out_count, out_seen, out_c,
):  # fmt: skip
    for run in numba.prange(starts.shape[0] - 1):  # the series of the batch, in parallel
        for jj in range(starts[run], starts[run + 1]):  # a series' points, in input order
            j = order[jj]
            s = slots[j]
            v = values[j]
            t = ts[j]
            n = n_model[s]
            n_seen[s] += 1
            if n == 0:
                t_first[s] = t
            elif t > t_last[s]:
                d = float(t - t_last[s])
                cadence[s] = d if cadence[s] == 0.0 else cadence[s] + 0.05 * (d - cadence[s])
            t_last[s] = t
            # transform: the typical magnitude is fixed after the first points
            if c_n[s] < _TRANSFORM_POINTS or c_sum[s] == 0.0:
                c_sum[s] += abs(v)
                c_n[s] += 1
            c = c_sum[s] / c_n[s] if c_sum[s] > 0.0 else 1.0
            x = math.copysign(math.log1p(abs(v) / c), v)
            # the models' predictions
            e_l = level[s]
            s_l = 1.2533 * level_dev[s]
            ok_d = ok_w = ok_f = False
            e_d = s_d = e_w = s_w = e_f = s_f = 0.0
            hb = (t % _MS_DAY) / _MS_HOUR
            wb = ((t + _MONDAY) % _MS_WEEK) / _MS_HOUR
            fb = int((t % _MS_DAY) // _MS_SLOT)
            wk = int(wb)
            if seasonal and n > 0:
                ok_d, e_d, s_d = _interp(day_mean, day_dev, day_n, s, N_DAY, hb)
                ok_w, e_w, s_w = _interp(week_mean, week_dev, week_n, s, N_WEEK, wb)
                per_slot_point = max(_MS_SLOT / cadence[s], 1.0) if cadence[s] > 0.0 else 1.0
                if slot_n[s, fb] >= _MIN_SLOT_COUNT * per_slot_point - 0.5:  # seen on 2 days, not 2 points
                    ok_f = True
                    e_f = float(slot_mean[s, fb])
                    s_f = 1.2533 * float(slot_dev[s, fb])
            # a day slot holds what the coarse model misses there (a batch job, a sharp peak), so on a
            # weekend it expects the weekend's level plus the same job
            coarse = e_w if ok_w else (e_d if ok_d else e_l)
            e_f += coarse
            e, sc = e_l, s_l
            coarse_best = err[s, 0]
            if ok_d and err_n[s, 1] > 50 and err[s, 1] < _SELECT_DAY * err[s, 0]:
                e, sc = e_d, s_d
                coarse_best = err[s, 1]
                if ok_w and err_n[s, 2] > 50 and err[s, 2] < _SELECT_WEEK * err[s, 1]:
                    e, sc = e_w, s_w
            if ok_w and err_n[s, 2] > 50 and err[s, 2] < _WEEK_ALONE * coarse_best:
                e, sc = e_w, s_w  # a weekly rhythm with no daily one (weekends only) is still a rhythm
            best = err[s, 0]
            if ok_d and err_n[s, 1] > 50:
                best = min(best, err[s, 1])
            if ok_w and err_n[s, 2] > 50:
                best = min(best, err[s, 2])
            if ok_f and err_n[s, 3] > 50 and err[s, 3] < _SELECT_SLOT * best:
                e, sc = e_f, max(s_f, 0.25 * sc)
            # local choice: the week hour's or the day slot's better model
            if ok_w and ok_d and week_err[s, wk] > 0.0 and week_err[s, wk] < _LOCAL_RATIO * day_err[s, wk]:
                e, sc = e_w, s_w
            elif (
                ok_w
                and ok_d
                and week_err[s, wk] == 0.0
                and err_n[s, 1] > 50
                and _LOCAL_RATIO * day_err[s, wk] > err[s, 1]
            ):
                e, sc = e_w, s_w
            if ok_f and slot_err[s, fb] > 0.0 and slot_err[s, fb] < _LOCAL_RATIO * coarse_err[s, fb]:
                e, sc = e_f, max(s_f, 0.25 * sc)
            sc = max(sc, _SPREAD_FLOOR * 1.2533 * spread_dev[s], 1e-3 * abs(e), 1e-12)
            if n > 100:
                sc = max(sc, _Q_FLOOR * q99[s] / 2.5758)
            z = (x - e) / sc if n > 0 else 0.0
            # what the series does one slot earlier or later in the day is not news: a daily batch job
            # whose last minute falls into the next slot is judged against the job's slot
            zj, ej, scj = z, e, sc
            if seasonal and n > 0:
                for nb in ((fb + N_SLOT - 1) % N_SLOT, (fb + 1) % N_SLOT):
                    ok_nb, e_nb, s_nb = _neighbour_slot(
                        slot_mean, slot_dev, slot_n, slot_err, coarse_err, s, nb, cadence[s], e, sc, coarse
                    )
                    if ok_nb:
                        s_nb = max(s_nb, _SPREAD_FLOOR * 1.2533 * spread_dev[s], 1e-3 * abs(e_nb), 1e-12)
                        if n > 100:
                            s_nb = max(s_nb, _Q_FLOOR * q99[s] / 2.5758)
                        if abs(x - e_nb) / s_nb < abs(zj):
                            zj, ej, scj = (x - e_nb) / s_nb, e_nb, s_nb
            # an average of fewer events than usual at this hour is noisier by sqrt(usual / events)
            ne = events[j]
            hour = int(hb)
            if ne > 0.0 and n > 0:
                typical = float(ev_day[s, hour])
                if typical > ne:
                    f = math.sqrt(typical / ne)
                    zj /= f
                    scj *= f
            out_z[j] = zj
            out_exp[j] = ej
            out_scale[j] = scj
            # the forest reads the value with the seasonal part of the expectation removed (linear units)
            out_adj[j] = v - (_inverse(ej, c) - _inverse(e_l, c)) if n > 0 else v
            # learn (after judging)
            if n > 0:
                r = abs(x - e)
                if q99[s] == 0.0:
                    q99[s] = r
                else:
                    q99[s] += _Q_RATE * max(q99[s], 1e-12) * ((1.0 if r > q99[s] else 0.0) - (1.0 - _Q_LEVEL))
                g = max(1.0 / (n + 1), 1.0 / _SELECT_POINTS)
                err[s, 0] += g * (abs(x - e_l) - err[s, 0])
                err_n[s, 0] += 1
                if ok_d:
                    _ew_model_err(err, err_n, s, 1, abs(x - e_d))
                if ok_w:
                    _ew_model_err(err, err_n, s, 2, abs(x - e_w))
                if ok_f:
                    _ew_model_err(err, err_n, s, 3, abs(x - e_f))
                per_slot_day = max(_MS_SLOT / cadence[s], 1.0) if cadence[s] > 0.0 else 1.0
                wl = 1.0 / (_DAY_MEMORY * per_slot_day)
                if ok_f:
                    _ew_err(slot_err, s, fb, abs(x - e_f), wl)
                    _ew_err(coarse_err, s, fb, abs(x - coarse), wl)
                if ok_d:
                    per_hour = max(_MS_HOUR / cadence[s], 1.0) if cadence[s] > 0.0 else 1.0
                    ww = 1.0 / (_WEEK_MEMORY * per_hour)
                    if ok_w:
                        _ew_err(week_err, s, wk, abs(x - e_w), ww)
                    _ew_err(day_err, s, wk, abs(x - e_d), ww)
            if ne > 0.0:  # the usual number of events at this hour of day, over ~3 days
                per_hour = max(_MS_HOUR / cadence[s], 1.0) if cadence[s] > 0.0 else 1.0
                if ev_day[s, hour] == 0.0:
                    ev_day[s, hour] = ne
                else:
                    ev_day[s, hour] += (ne - ev_day[s, hour]) / (_DAY_MEMORY * per_hour)
            n += 1
            n_model[s] = n
            out_count[j] = n
            out_seen[j] = n_seen[s]
            out_c[j] = c
            cap = _CLIP * sc
            xc = min(max(x, e - cap), e + cap) if n > 2 else x
            b = max(1.0 / n, 1.0 / _LEVEL_POINTS)
            dl = xc - level[s] if n > 1 else x - level[s]
            level[s] += b * dl
            level_dev[s] += b * (abs(dl) - level_dev[s])
            g2 = max(1.0 / n, 1.0 / _SPREAD_POINTS)
            dg = x - spread_mean[s]
            spread_mean[s] += g2 * dg
            spread_dev[s] += g2 * (abs(dg) - spread_dev[s])
            if seasonal:
                per_hour = max(_MS_HOUR / cadence[s], 1.0) if cadence[s] > 0.0 else 1.0
                per_slot = max(_MS_SLOT / cadence[s], 1.0) if cadence[s] > 0.0 else 1.0
                hd = int(hb)
                _ew(
                    day_mean,
                    day_dev,
                    day_n,
                    s,
                    hd,
                    x,
                    max(1.0 / (day_n[s, hd] + 1.0), 1.0 / (_DAY_MEMORY * per_hour)),
                    cap,
                    level_dev[s],
                    e if n > 2 else x,
                )
                _ew(
                    week_mean,
                    week_dev,
                    week_n,
                    s,
                    wk,
                    x,
                    max(1.0 / (week_n[s, wk] + 1.0), 1.0 / (_WEEK_MEMORY * per_hour)),
                    cap,
                    level_dev[s],
                    e if n > 2 else x,
                )
                _ew(
                    slot_mean,
                    slot_dev,
                    slot_n,
                    s,
                    fb,
                    x - coarse,
                    max(1.0 / (slot_n[s, fb] + 1.0), 1.0 / (_DAY_MEMORY * per_slot)),
                    cap,
                    level_dev[s],
                    (e if n > 2 else x) - coarse,
                )


@numba.njit(cache=True, nogil=True)
def _neighbour_slot(  # type: ignore[no-untyped-def]  # numba infers the types
    slot_mean, slot_dev, slot_n, slot_err, coarse_err, s, nb, cadence, e, sc, base
):  # fmt: skip
    """(ok, mean, scale) of day slot ``nb`` (its residual on top of ``base``, the coarse model's
    expectation for the point) where it holds a rhythm of its own.

    It must have been seen on two days, predict its slot better than the coarse models do, and
    expect a level the point's own model would call an anomaly (``_NEIGHBOUR_DISTINCT`` scales away):
    the edge of a recurring job or peak, not one more noisy estimate of the same level (taking the
    better of three noisy estimates everywhere dulled real anomalies: NAB dev -1.1).
    """
    per_slot = max(_MS_SLOT / cadence, 1.0) if cadence > 0.0 else 1.0
    if slot_n[s, nb] < _MIN_SLOT_COUNT * per_slot - 0.5:
        return False, 0.0, 0.0
    if not (0.0 < slot_err[s, nb] < _LOCAL_RATIO * coarse_err[s, nb]):
        return False, 0.0, 0.0
    e_nb = base + float(slot_mean[s, nb])
    if abs(e_nb - e) < _NEIGHBOUR_DISTINCT * sc:
        return False, 0.0, 0.0
    return True, e_nb, max(1.2533 * float(slot_dev[s, nb]), 0.25 * sc)


@numba.njit(cache=True, nogil=True)
def _ew_model_err(err: np.ndarray, err_n: np.ndarray, s: int, k: int, e: float) -> None:
    err_n[s, k] += 1
    err[s, k] += max(1.0 / err_n[s, k], 1.0 / _SELECT_POINTS) * (e - err[s, k])


@numba.njit(cache=True, nogil=True)
def _ew_err(arr: np.ndarray, s: int, b: int, e: float, w: float) -> None:
    if arr[s, b] > 0.0:
        arr[s, b] += w * (e - arr[s, b])
    else:
        arr[s, b] = e + 1e-12


@numba.njit(cache=True, nogil=True)
def _to_score(s: float, s100: float) -> float:
    """Surprise -> 0-100: linear up to 70, then approaching 100 smoothly (ranks strong evidence)."""
    lin = 100.0 * s / s100
    if lin <= 70.0:
        return lin
    return 100.0 - 30.0 * math.exp(-(lin - 70.0) / 30.0)


@numba.njit(cache=True, nogil=True)
def _inverse(x: float, c: float) -> float:
    """The value whose transform is ``x`` (``v = sign(x) * c * (exp(|x|) - 1)``)."""
    return math.copysign(c * math.expm1(min(abs(x), 700.0)), x)


# --------------------------------------------------------------------------------------------------
# Pass B: judging the point (after the forest)


@numba.njit(cache=True, nogil=True, parallel=True)
def _judge_kernel(  # type: ignore[no-untyped-def]  # numba infers the types
    order, starts, slots, raw, z, values, exp_x, scale, ts, missing, counts, seens, mags, p_threshold,
    p_learning_points,
    p_learning_ms, p_learning_max, p_direction, p_min_rel, p_s100, p_suppress, p_cap, p_conf_points,
    p_missing_conf, p_forest_w, p_value_w,
    t_first, recent_z, ex_value, ex_sustained, shift_z, shift_armed, ex_shift, calib_n, recent_raw, raw_mean,
    raw_var, forest_alarms, forest_agreed, since_alert, alert_sign, missing_rate, quiet_n,
    score, decision, confidence, inference, processed, expected, low, high, reason, value_score,
    forest_score,
):  # fmt: skip
    s_thr = p_threshold * p_s100 / 100.0
    # the |z| at which the value channel's Gaussian surprise reaches the threshold: the band
    z_band = 1.0
    while -_log_tail(z_band, True) < s_thr and z_band < 40.0:
        z_band += 0.01
    for run in numba.prange(starts.shape[0] - 1):  # the series of the batch, in parallel
        for jj in range(starts[run], starts[run + 1]):  # a series' points, in input order
            j = order[jj]
            s = slots[j]
            n = counts[j]  # points the models have learned, this one included (pass A)
            processed[j] = seens[j]
            r = raw[j]
            if not (r >= 0.0):
                r = 0.0
            k = (n - 1) % _RAW_POINTS
            recent_raw[s, k] = r
            m = min(n, _RAW_POINTS)
            a = 0.0
            for i in range(m):
                a += recent_raw[s, i]
            a /= m
            zz = z[j]
            recent_z[s, (n - 1) % MEAN_POINTS] = zz
            # the shift channel: an EW mean of the clipped residuals, in units of its own spread
            alpha = max(1.0 / n, 1.0 / SHIFT_POINTS)
            shift_z[s] += alpha * (min(max(zz, -_SHIFT_CLIP), _SHIFT_CLIP) - shift_z[s])
            zsh = abs(shift_z[s]) * math.sqrt((2.0 - alpha) / alpha)
            if zsh < _SHIFT_REARM:
                shift_armed[s] = 1
            mr = missing_rate[s] + 0.01 * ((1.0 if missing[j] else 0.0) - missing_rate[s])
            missing_rate[s] = mr
            c = mags[j]
            e = exp_x[j]
            expected[j] = _inverse(e, c)
            low[j] = _inverse(e - z_band * scale[j], c)
            high[j] = _inverse(e + z_band * scale[j], c)
            t = ts[j]
            is_inf = n > p_learning_points and ((t - t_first[s]) >= p_learning_ms or n >= p_learning_max)
            fs = vs = ms = hs = 0.0
            sc = 0.0
            why = 0
            sign = 1
            s_now = 0.0
            zb = 0.0
            zb_sum = 0.0
            if n > MEAN_POINTS:
                for i in range(MEAN_POINTS):
                    zb_sum += recent_z[s, i]
                zb = abs(zb_sum) / math.sqrt(MEAN_POINTS)
            xf = 0.0
            sd = math.sqrt(raw_var[s])
            if sd > 0.0:
                xf = max((a - raw_mean[s]) / sd, 0.0)
            if is_inf and n > 2:
                nc = calib_n[s]
                v_raw = _surprise(abs(zz), ex_value[s], nc)
                m_raw = _surprise(zb, ex_sustained[s], nc) if n > MEAN_POINTS else 0.0
                h_raw = _surprise(zsh, ex_shift[s], nc) if n > SHIFT_POINTS else 0.0
                f_raw = -_log_tail(xf, False)
                # the forest's voice: gated by value evidence, weighted by its agreement on this series
                support = max(v_raw, m_raw, h_raw)
                f_gated = f_raw if support >= _FOREST_GATE else 0.0
                trust = (
                    (forest_agreed[s] + _TRUST_PRIOR) / (forest_alarms[s] + _TRUST_PRIOR)
                ) ** _TRUST_POWER
                if f_raw >= _TRUST_FOREST:  # every forest alarm counts, gated or not
                    forest_alarms[s] += 1.0
                    if support >= _TRUST_VALUE:
                        forest_agreed[s] += 1.0
                fs = p_forest_w * f_gated * trust
                vs = p_value_w * v_raw
                ms = p_value_w * m_raw
                hs = p_value_w * _SHIFT_WEIGHT * h_raw if shift_armed[s] == 1 else 0.0
                s_val = max(vs, ms, hs)
                s_now = max(fs, s_val)
                if fs > s_val:
                    why = 3
                elif vs >= max(ms, hs):
                    why = 1
                elif ms >= hs:
                    why = 2
                else:
                    why = 4
                sc = _to_score(s_now, p_s100)
                # an incident is over once the series has been quiet for a while: a later anomaly
                # is a new one, not held by the last alert's suppression
                if s_now >= _QUIET_LEVEL:
                    quiet_n[s] = 0
                else:
                    quiet_n[s] += 1
                    if quiet_n[s] >= _QUIET_POINTS:
                        since_alert[s] = _NEVER
                # the direction of the strongest value evidence (the forest's has none)
                if vs >= max(ms, hs):
                    sign = 1 if zz > 0.0 else -1
                elif ms >= hs:
                    sign = 1 if zb_sum > 0.0 else -1
                else:
                    sign = 1 if shift_z[s] > 0.0 else -1
                if since_alert[s] < p_suppress:
                    other = s_val > s_thr and sign != alert_sign[s]
                    if not other:
                        sc = min(sc, p_cap * p_threshold)
            dec = 0
            if is_inf and sc > p_threshold:
                dec = 1
                v = values[j]
                diff = v - expected[j]
                if p_direction == 1 and not diff > 0.0:
                    dec = 0
                elif p_direction == 2 and not diff < 0.0:
                    dec = 0
                if p_min_rel > 0.0:
                    base = abs(expected[j])
                    rel = abs(diff) / base if base > 0.0 else (math.inf if diff != 0.0 else 0.0)
                    if not rel >= p_min_rel:
                        dec = 0
            if dec == 1:
                since_alert[s] = 0
                shift_armed[s] = 0
                alert_sign[s] = sign
            elif since_alert[s] < _NEVER:
                since_alert[s] += 1
            score[j] = sc
            decision[j] = dec
            inference[j] = is_inf
            reason[j] = why if sc > 0.0 else 0
            value_score[j] = _to_score(max(vs, ms, hs), p_s100)
            forest_score[j] = _to_score(fs, p_s100)
            conf = 100.0 * min(1.0, n / p_conf_points) * (1.0 - mr)
            if missing[j]:
                conf *= p_missing_conf
            confidence[j] = conf
            # learn after judging: the tails from every point (a series that alerts often learns that its
            # outliers are common), the forest's moments
            if n > 2:
                nc = calib_n[s] + 1
                calib_n[s] = nc
                w = max(1.0 / nc, 1.0 / _CALIB_POINTS)
                _learn_tail(ex_value, s, abs(zz), w)
                # an incident's sustained and shifted stretch is not what this series normally does:
                # learned, a few of them would teach the series that the next shift is common
                w_run = w if since_alert[s] >= p_suppress else 0.0
                if n > MEAN_POINTS:
                    _learn_tail(ex_sustained, s, zb, w_run)
                if n > SHIFT_POINTS:
                    _learn_tail(ex_shift, s, zsh, w_run)
            aw = max(1.0 / n, 1.0 / _FOREST_HISTORY)
            d = a - raw_mean[s]
            raw_mean[s] += aw * d
            raw_var[s] = (1.0 - aw) * (raw_var[s] + aw * d * d)


# --------------------------------------------------------------------------------------------------
# The Python side


@dataclass(frozen=True)
class Prepared:
    """Pass A's outputs, aligned with the batch: the forest's input and the value's judgement."""

    z: np.ndarray  # float64[n] the value's residual in scales
    expected_x: np.ndarray  # float64[n] the expectation, transformed
    scale: np.ndarray  # float64[n] the residual's scale, transformed
    forest_input: np.ndarray  # float64[n] the value with the seasonal part removed
    count: np.ndarray  # int64[n] points the series' models have learned, this one included
    seen: np.ndarray  # int64[n] points the series has processed, this one included
    magnitude: np.ndarray  # float64[n] the transform's typical magnitude ``c`` for the point
    order: np.ndarray  # int64[n] the batch's points grouped by series (stable: input order inside)
    starts: np.ndarray  # int64[series + 1] where each series' points begin in ``order``


def prepare(state: NormalizerState, params: NormalizerParams, slots: np.ndarray, values: np.ndarray,
            timestamps_ms: np.ndarray, events: np.ndarray | None = None) -> Prepared:  # fmt: skip
    """Judge each value against its series' models and learn it (in input order).

    ``events``: for an average, how many events it is made of (0: not an average, or unknown).
    """
    n = slots.shape[0]
    out = [np.zeros(n) for _ in range(4)] + [np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n)]
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    order, starts = _runs(slots)
    if n:
        a = state.arrays
        _prepare_kernel(
            order,
            starts,
            slots,
            np.ascontiguousarray(values, dtype=np.float64),
            np.ascontiguousarray(timestamps_ms, dtype=np.int64),
            np.zeros(n) if events is None else np.ascontiguousarray(events, dtype=np.float64),
            bool(params.seasonal),
            *(a[name] for name in _PREPARE_STATE),
            *out,
        )
    return Prepared(
        order=order,
        starts=starts,
        z=out[0],
        expected_x=out[1],
        scale=out[2],
        forest_input=out[3],
        count=out[4],
        seen=out[5],
        magnitude=out[6],
    )


def _runs(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of each series, together and in input order (``order``), and where each series'
    run begins (``starts``, with ``n`` last): the compiled passes take the series in parallel."""
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    cut = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    return order.astype(np.int64, copy=False), np.concatenate(([0], cut, [slots.shape[0]])).astype(np.int64)


_PREPARE_STATE = (
    "n_seen", "n_model", "t_first", "t_last", "cadence", "c_sum", "c_n", "level", "level_dev", "spread_mean",
    "spread_dev", "q99", "err", "err_n", "day_mean", "day_dev", "day_n", "week_mean", "week_dev",
    "week_n", "slot_mean", "slot_dev", "slot_n", "slot_err", "coarse_err", "week_err", "day_err", "ev_day",
)  # fmt: skip
_JUDGE_STATE = (
    "t_first", "recent_z", "ex_value", "ex_sustained", "shift_z", "shift_armed", "ex_shift", "calib_n",
    "recent_raw", "raw_mean", "raw_var", "forest_alarms", "forest_agreed", "since_alert",
    "alert_sign", "missing_rate", "quiet_n",
)  # fmt: skip


@dataclass
class NormalizedBatch:
    """Outputs of ``judge`` aligned with the input points."""

    anomaly_score: np.ndarray  # float64[n], 0-100
    decision: np.ndarray  # int8[n]
    confidence: np.ndarray  # float64[n], 0-100
    inference: np.ndarray  # bool[n]
    processed_points: np.ndarray  # int64[n]
    expected_value: np.ndarray  # float64[n], in the value's units
    expected_low: np.ndarray  # float64[n], the band a value is judged normal in
    expected_high: np.ndarray
    reason: np.ndarray  # int8[n], REASONS index
    value_score: np.ndarray  # float64[n], the value channels' score 0-100
    forest_score: np.ndarray  # float64[n], the forest channel's (gated, weighted) score 0-100


def judge(
    state: NormalizerState,
    params: NormalizerParams,
    slots: np.ndarray,
    raw: np.ndarray,
    prepared: Prepared,
    values: np.ndarray,
    timestamps_ms: np.ndarray,
    missing: np.ndarray,
) -> NormalizedBatch:
    """Score a batch of points in input order, advancing each series' state (after ``prepare``)."""
    n = slots.shape[0]
    out = NormalizedBatch(
        anomaly_score=np.zeros(n),
        decision=np.zeros(n, dtype=np.int8),
        confidence=np.zeros(n),
        inference=np.zeros(n, dtype=np.bool_),
        processed_points=np.zeros(n, dtype=np.int64),
        expected_value=np.zeros(n),
        expected_low=np.zeros(n),
        expected_high=np.zeros(n),
        reason=np.zeros(n, dtype=np.int8),
        value_score=np.zeros(n),
        forest_score=np.zeros(n),
    )
    if n == 0:
        return out
    p = params
    _judge_kernel(
        prepared.order,
        prepared.starts,
        np.ascontiguousarray(slots, dtype=np.int64),
        np.ascontiguousarray(raw, dtype=np.float64),
        prepared.z,
        np.ascontiguousarray(values, dtype=np.float64),
        prepared.expected_x,
        prepared.scale,
        np.ascontiguousarray(timestamps_ms, dtype=np.int64),
        np.ascontiguousarray(missing, dtype=np.bool_),
        prepared.count,
        prepared.seen,
        prepared.magnitude,
        float(p.threshold),
        int(p.learning_points),
        float(p.learning_ms),
        int(p.learning_max_points),
        int(p.direction),
        float(p.min_relative_change),
        float(p.surprise_at_100),
        int(p.suppress_points),
        float(p.suppress_cap),
        float(p.confidence_points),
        float(p.missing_confidence),
        float(p.forest_weight),
        float(p.value_weight),
        *(state.arrays[name] for name in _JUDGE_STATE),
        *(getattr(out, f.name) for f in fields(out)),
    )
    return out
