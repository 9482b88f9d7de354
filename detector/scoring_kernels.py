"""The scoring stage's kernels, written once as plain Python and compiled twice (CPU and GPU).

What each pass computes is described in detector/normalize.py. Every function here uses only
scalar arithmetic and array indexing, so that ``detector.scoring_cpu`` can compile it with
``numba.njit`` and ``detector.scoring_cuda`` with ``numba.cuda.jit(device=True)``; calls between
them go through module globals, which each compiler rebinds to its own compiled version
(``compile_namespace``, as detector/kernels.py does for the forest).

``prepare_point`` and ``judge_point`` advance one point ``j`` of series slot ``s``; a driver runs
the points of one series in input order, and different series in parallel (CPU: ``prange`` over
the batch's series; GPU: one thread per series). The per-slot state arrays are those of
``NormalizerState`` (row ``s``); the profiles are float32 and every read of them goes through
``float()``: the compiled code widens a float32 to float64 before any arithmetic, and so does
Python under ``float()`` (numba's CUDA simulator runs this source as Python, where numpy 2 would
otherwise keep float32 arithmetic).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from detector.kernels import compile_functions

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

# --------------------------------------------------------------------------------------------------
# Tail probabilities


def _log_tail(z: float, two_sided: bool) -> float:
    """log10 of the standard normal tail beyond ``z`` (both tails when ``two_sided``)."""
    p = 0.5 * math.erfc(z / _SQRT2)
    if two_sided:
        p *= 2.0
    return math.log10(max(p, 1e-300))


def _surprise(x: float, ex: np.ndarray, s: int, n: int) -> float:
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
        if float(ex[s, j]) * neff >= _CALIB_EVIDENCE:
            j_star = j
    if j_star < 0:
        return -lg
    cand = math.log10(max(float(ex[s, j_star]), 1e-300)) + (lg - _log_tail(LEVELS[j_star], True))
    return -max(lg, cand)


def _learn_tail(ex: np.ndarray, s: int, x: float, w: float) -> None:
    for j in range(N_LEVELS):
        ex[s, j] = float(ex[s, j]) + w * ((1.0 if x >= LEVELS[j] else 0.0) - float(ex[s, j]))


# --------------------------------------------------------------------------------------------------
# Pass A: the value's expectation (runs before the forest, which reads the adjusted value)


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
    if float(counts[s, b0]) >= _MIN_COUNT and float(counts[s, b1]) >= _MIN_COUNT:
        m = (1.0 - f) * float(means[s, b0]) + f * float(means[s, b1])
        d = 1.2533 * ((1.0 - f) * float(devs[s, b0]) + f * float(devs[s, b1]))
        return True, float(m), float(d)
    return False, 0.0, 0.0


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
    c = float(count[s, b]) + 1.0
    count[s, b] = c
    if c == 1.0:
        mean[s, b] = min(max(x, e - cap), e + cap)
        dev[s, b] = dev0
        return
    m = float(mean[s, b])
    xb = min(max(x, m - cap), m + cap)
    d = xb - m
    mean[s, b] = m + w * d
    dev[s, b] = float(dev[s, b]) + w * (abs(d) - float(dev[s, b]))


def prepare_point(  # numba infers the types
    j, s, values, ts, events, seasonal,
    n_seen, n_model, t_first, t_last, cadence, c_sum, c_n, level, level_dev, spread_mean, spread_dev, q99,
    err, err_n, day_mean, day_dev, day_n, week_mean, week_dev, week_n, slot_mean, slot_dev, slot_n,
    slot_err, coarse_err, week_err, day_err, ev_day,
    out_z, out_exp, out_scale, out_adj, out_count, out_seen, out_c,
):  # fmt: skip
    """Pass A for point ``j`` of slot ``s``: judge the value against the series' models, then learn it."""
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
        if float(slot_n[s, fb]) >= _MIN_SLOT_COUNT * per_slot_point - 0.5:  # seen on 2 days, not 2 points
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
    if (
        ok_w
        and ok_d
        and float(week_err[s, wk]) > 0.0
        and float(week_err[s, wk]) < _LOCAL_RATIO * float(day_err[s, wk])
    ):
        e, sc = e_w, s_w
    elif (
        ok_w
        and ok_d
        and float(week_err[s, wk]) == 0.0
        and err_n[s, 1] > 50
        and _LOCAL_RATIO * float(day_err[s, wk]) > err[s, 1]
    ):
        e, sc = e_w, s_w
    if (
        ok_f
        and float(slot_err[s, fb]) > 0.0
        and float(slot_err[s, fb]) < _LOCAL_RATIO * float(coarse_err[s, fb])
    ):
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
        if float(ev_day[s, hour]) == 0.0:
            ev_day[s, hour] = ne
        else:
            ev_day[s, hour] = float(ev_day[s, hour]) + (ne - float(ev_day[s, hour])) / (
                _DAY_MEMORY * per_hour
            )
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
            max(1.0 / (float(day_n[s, hd]) + 1.0), 1.0 / (_DAY_MEMORY * per_hour)),
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
            max(1.0 / (float(week_n[s, wk]) + 1.0), 1.0 / (_WEEK_MEMORY * per_hour)),
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
            max(1.0 / (float(slot_n[s, fb]) + 1.0), 1.0 / (_DAY_MEMORY * per_slot)),
            cap,
            level_dev[s],
            (e if n > 2 else x) - coarse,
        )


def _neighbour_slot(
    slot_mean: Any, slot_dev: Any, slot_n: Any, slot_err: Any, coarse_err: Any, s: int, nb: int,
    cadence: float, e: float, sc: float, base: float,
) -> tuple[bool, float, float]:  # fmt: skip
    """(ok, mean, scale) of day slot ``nb`` (its residual on top of ``base``, the coarse model's
    expectation for the point) where it holds a rhythm of its own.

    It must have been seen on two days, predict its slot better than the coarse models do, and
    expect a level the point's own model would call an anomaly (``_NEIGHBOUR_DISTINCT`` scales away):
    the edge of a recurring job or peak, not one more noisy estimate of the same level (taking the
    better of three noisy estimates everywhere dulled real anomalies: NAB dev -1.1).
    """
    per_slot = max(_MS_SLOT / cadence, 1.0) if cadence > 0.0 else 1.0
    if float(slot_n[s, nb]) < _MIN_SLOT_COUNT * per_slot - 0.5:
        return False, 0.0, 0.0
    if not (0.0 < float(slot_err[s, nb]) < _LOCAL_RATIO * float(coarse_err[s, nb])):
        return False, 0.0, 0.0
    e_nb = base + float(slot_mean[s, nb])
    if abs(e_nb - e) < _NEIGHBOUR_DISTINCT * sc:
        return False, 0.0, 0.0
    return True, e_nb, max(1.2533 * float(slot_dev[s, nb]), 0.25 * sc)


def _ew_model_err(err: np.ndarray, err_n: np.ndarray, s: int, k: int, e: float) -> None:
    err_n[s, k] += 1
    err[s, k] += max(1.0 / err_n[s, k], 1.0 / _SELECT_POINTS) * (e - err[s, k])


def _ew_err(arr: np.ndarray, s: int, b: int, e: float, w: float) -> None:
    if float(arr[s, b]) > 0.0:
        arr[s, b] = float(arr[s, b]) + w * (e - float(arr[s, b]))
    else:
        arr[s, b] = e + 1e-12


def _to_score(s: float, s100: float) -> float:
    """Surprise -> 0-100: linear up to 70, then approaching 100 smoothly (ranks strong evidence)."""
    lin = 100.0 * s / s100
    if lin <= 70.0:
        return lin
    return 100.0 - 30.0 * math.exp(-(lin - 70.0) / 30.0)


def _inverse(x: float, c: float) -> float:
    """The value whose transform is ``x`` (``v = sign(x) * c * (exp(|x|) - 1)``)."""
    return math.copysign(c * math.expm1(min(abs(x), 700.0)), x)


# --------------------------------------------------------------------------------------------------
# Pass B: judging the point (after the forest)


def judge_band(p_threshold, p_s100):  # numba infers the types
    """(surprise at the threshold, the |z| at which the value channel's Gaussian surprise reaches
    it: the expected band's half-width in scales), the same for every point of a batch."""
    s_thr = p_threshold * p_s100 / 100.0
    z_band = 1.0
    while -_log_tail(z_band, True) < s_thr and z_band < 40.0:
        z_band += 0.01
    return s_thr, z_band


def judge_point(  # numba infers the types
    j, s, raw, z, values, exp_x, scale, ts, missing, counts, seens, mags, s_thr, z_band, p_threshold,
    p_learning_points,
    p_learning_ms, p_learning_max, p_direction, p_min_rel, p_s100, p_suppress, p_cap, p_conf_points,
    p_missing_conf, p_forest_w, p_value_w,
    t_first, recent_z, ex_value, ex_sustained, shift_z, shift_armed, ex_shift, calib_n, recent_raw, raw_mean,
    raw_var, forest_alarms, forest_agreed, since_alert, alert_sign, missing_rate, quiet_n,
    score, decision, confidence, inference, processed, expected, low, high, reason, value_score,
    forest_score,
):  # fmt: skip
    """Pass B for point ``j`` of slot ``s`` (after the forest): judge it, then learn the tails."""
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
        v_raw = _surprise(abs(zz), ex_value, s, nc)
        m_raw = _surprise(zb, ex_sustained, s, nc) if n > MEAN_POINTS else 0.0
        h_raw = _surprise(zsh, ex_shift, s, nc) if n > SHIFT_POINTS else 0.0
        f_raw = -_log_tail(xf, False)
        # the forest's voice: gated by value evidence, weighted by its agreement on this series
        support = max(v_raw, m_raw, h_raw)
        f_gated = f_raw if support >= _FOREST_GATE else 0.0
        trust = ((forest_agreed[s] + _TRUST_PRIOR) / (forest_alarms[s] + _TRUST_PRIOR)) ** _TRUST_POWER
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


#: Names of the functions compiled for both targets, in no particular order.
DEVICE_FUNCTIONS = (
    "_log_tail",
    "_surprise",
    "_learn_tail",
    "_interp",
    "_ew",
    "_neighbour_slot",
    "_ew_model_err",
    "_ew_err",
    "_to_score",
    "_inverse",
    "judge_band",
    "prepare_point",
    "judge_point",
)


def compile_namespace(jit: Callable[[Callable[..., Any]], Any]) -> dict[str, Any]:
    """Compile every function of ``DEVICE_FUNCTIONS`` with ``jit`` in a private copy of this
    module's globals, so that calls between them resolve to the same target's versions."""
    return compile_functions(globals(), DEVICE_FUNCTIONS, jit)
