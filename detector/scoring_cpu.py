"""CPU build of the scoring stage's kernels (detector/scoring_kernels.py): ``numba.njit`` and two
parallel drivers that run ``prange`` over the batch's series, a series' points in input order."""

from __future__ import annotations

import numba

from detector import scoring_kernels

_K = scoring_kernels.compile_namespace(numba.njit(cache=True, nogil=True))

judge_band = _K["judge_band"]
_prepare_point = _K["prepare_point"]
_judge_point = _K["judge_point"]


@numba.njit(cache=True, nogil=True, parallel=True)
def prepare_batch(  # numba infers the types
    order, starts, slots, values, ts, events, seasonal,
    n_seen, n_model, t_first, t_last, cadence, c_sum, c_n, level, level_dev, spread_mean, spread_dev, q99,
    err, err_n, day_mean, day_dev, day_n, week_mean, week_dev, week_n, slot_mean, slot_dev, slot_n,
    slot_err, coarse_err, week_err, day_err, ev_day,
    out_z, out_exp, out_scale, out_adj, out_count, out_seen, out_c,
):  # fmt: skip
    for run in numba.prange(starts.shape[0] - 1):  # the series of the batch, in parallel
        for jj in range(starts[run], starts[run + 1]):  # a series' points, in input order
            j = order[jj]
            _prepare_point(
                j, slots[j], values, ts, events, seasonal,
                n_seen, n_model, t_first, t_last, cadence, c_sum, c_n, level, level_dev, spread_mean,
                spread_dev, q99, err, err_n, day_mean, day_dev, day_n, week_mean, week_dev, week_n,
                slot_mean, slot_dev, slot_n, slot_err, coarse_err, week_err, day_err, ev_day,
                out_z, out_exp, out_scale, out_adj, out_count, out_seen, out_c,
            )  # fmt: skip


@numba.njit(cache=True, nogil=True, parallel=True)
def judge_batch(  # numba infers the types
    order, starts, slots, raw, z, values, exp_x, scale, ts, missing, counts, seens, mags, s_thr, z_band,
    p_threshold, p_learning_points,
    p_learning_ms, p_learning_max, p_direction, p_min_rel, p_s100, p_suppress, p_cap, p_conf_points,
    p_missing_conf, p_forest_w, p_value_w,
    t_first, recent_z, ex_value, ex_sustained, shift_z, shift_armed, ex_shift, calib_n, recent_raw, raw_mean,
    raw_var, forest_alarms, forest_agreed, since_alert, alert_sign, missing_rate, quiet_n,
    score, decision, confidence, inference, processed, expected, low, high, reason, value_score,
    forest_score,
):  # fmt: skip
    for run in numba.prange(starts.shape[0] - 1):  # the series of the batch, in parallel
        for jj in range(starts[run], starts[run + 1]):  # a series' points, in input order
            j = order[jj]
            _judge_point(
                j, slots[j], raw, z, values, exp_x, scale, ts, missing, counts, seens, mags, s_thr, z_band,
                p_threshold, p_learning_points, p_learning_ms, p_learning_max, p_direction, p_min_rel,
                p_s100, p_suppress, p_cap, p_conf_points, p_missing_conf, p_forest_w, p_value_w,
                t_first, recent_z, ex_value, ex_sustained, shift_z, shift_armed, ex_shift, calib_n,
                recent_raw, raw_mean, raw_var, forest_alarms, forest_agreed, since_alert, alert_sign,
                missing_rate, quiet_n,
                score, decision, confidence, inference, processed, expected, low, high, reason,
                value_score, forest_score,
            )  # fmt: skip


@numba.njit(cache=True, nogil=True, parallel=True)
def stage_columns(slots, values, ts, events, out_f, out_i):  # numba infers the types
    """Copy a batch's four columns into one block (``out_f`` float64[4, n] and ``out_i``, the same
    memory as int64): slots, values, timestamps, event counts; in parallel (the GPU backend's
    page-locked staging block: one copy to the device then takes them all)."""
    for j in numba.prange(slots.shape[0]):
        out_i[0, j] = slots[j]
        out_f[1, j] = values[j]
        out_i[2, j] = ts[j]
        out_f[3, j] = events[j]
