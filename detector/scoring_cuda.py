"""GPU build of the scoring stage's kernels: the source of detector/scoring_kernels.py compiled
with ``numba.cuda``, one thread per series of the batch (its points in input order).

The state (``NormalizerState.arrays``) lives on the device; a pass copies the batch's inputs in and
only what leaves the device comes back: the forest's input after ``prepare``, the results after
``judge``. Imported only for the GPU backend (and the CUDA simulator in tests).
"""

from __future__ import annotations

import functools
from dataclasses import fields
from typing import Any

import numpy as np
from numba import cuda

from detector import scoring_kernels

_BLOCK = 128
#: The simulator runs each thread of a block as a Python thread: small blocks are much faster.
_SIM_BLOCK = 32


@functools.cache
def _kernels() -> tuple[Any, Any]:
    """(prepare, judge) kernels, compiled once per process."""
    ns = scoring_kernels.compile_namespace(cuda.jit(device=True))
    prepare_point = ns["prepare_point"]
    judge_point = ns["judge_point"]

    @cuda.jit
    def k_prepare(
        order, starts, slots, values, ts, events, seasonal,
        n_seen, n_model, t_first, t_last, cadence, c_sum, c_n, level, level_dev, spread_mean, spread_dev,
        q99, err, err_n, day_mean, day_dev, day_n, week_mean, week_dev, week_n, slot_mean, slot_dev, slot_n,
        slot_err, coarse_err, week_err, day_err, ev_day,
        out_z, out_exp, out_scale, out_adj, out_count, out_seen, out_c,
    ):  # fmt: skip
        run = cuda.grid(1)
        if run < starts.shape[0] - 1:
            for jj in range(starts[run], starts[run + 1]):
                j = order[jj]
                prepare_point(
                    j, slots[j], values, ts, events, seasonal,
                    n_seen, n_model, t_first, t_last, cadence, c_sum, c_n, level, level_dev, spread_mean,
                    spread_dev, q99, err, err_n, day_mean, day_dev, day_n, week_mean, week_dev, week_n,
                    slot_mean, slot_dev, slot_n, slot_err, coarse_err, week_err, day_err, ev_day,
                    out_z, out_exp, out_scale, out_adj, out_count, out_seen, out_c,
                )  # fmt: skip

    @cuda.jit
    def k_judge(
        order, starts, slots, raw, z, values, exp_x, scale, ts, missing, counts, seens, mags, s_thr,
        z_band, p_threshold, p_learning_points,
        p_learning_ms, p_learning_max, p_direction, p_min_rel, p_s100, p_suppress, p_cap, p_conf_points,
        p_missing_conf, p_forest_w, p_value_w,
        t_first, recent_z, ex_value, ex_sustained, shift_z, shift_armed, ex_shift, calib_n, recent_raw,
        raw_mean, raw_var, forest_alarms, forest_agreed, since_alert, alert_sign, missing_rate, quiet_n,
        score, decision, confidence, inference, processed, expected, low, high, reason, value_score,
        forest_score,
    ):  # fmt: skip
        run = cuda.grid(1)
        if run < starts.shape[0] - 1:
            for jj in range(starts[run], starts[run + 1]):
                j = order[jj]
                judge_point(
                    j, slots[j], raw, z, values, exp_x, scale, ts, missing, counts, seens, mags, s_thr,
                    z_band, p_threshold, p_learning_points, p_learning_ms, p_learning_max, p_direction,
                    p_min_rel, p_s100, p_suppress, p_cap, p_conf_points, p_missing_conf, p_forest_w,
                    p_value_w,
                    t_first, recent_z, ex_value, ex_sustained, shift_z, shift_armed, ex_shift, calib_n,
                    recent_raw, raw_mean, raw_var, forest_alarms, forest_agreed, since_alert, alert_sign,
                    missing_rate, quiet_n,
                    score, decision, confidence, inference, processed, expected, low, high, reason,
                    value_score, forest_score,
                )  # fmt: skip

    return k_prepare, k_judge


def _grid(state: Any, runs: int) -> tuple[int, int]:
    """(blocks, threads per block) for one thread per run."""
    block = _BLOCK if state.backend.name == "gpu" else _SIM_BLOCK
    return (runs + block - 1) // block, block


def _device(state: Any, names: tuple[str, ...]) -> list[Any]:
    """The state arrays as numba device arrays, kept while the arrays are the same objects: making
    them from CuPy arrays at each launch costs a synchronization per array."""
    if state.backend.name != "gpu":
        return [state.arrays[name] for name in names]  # the simulator takes host arrays
    cache = state.__dict__.setdefault("_device_views", {})
    out = []
    for name in names:
        arr = state.arrays[name]
        hit = cache.get(name)
        if hit is None or hit[0] is not arr:
            hit = cache[name] = (arr, cuda.as_cuda_array(arr))
        out.append(hit[1])
    return out


def _to_device(state: Any, a: np.ndarray) -> Any:
    if state.backend.name != "gpu":
        return a
    return cuda.to_device(a)


def prepare(
    state: Any,
    seasonal: bool,
    slots: np.ndarray,
    values: np.ndarray,
    ts: np.ndarray,
    events: np.ndarray,
    order: np.ndarray,
    starts: np.ndarray,
    names: tuple[str, ...],
) -> dict[str, Any]:
    """``normalize.prepare`` on the device (``names``: the state arrays it takes, in order): the
    fields of ``normalize.Prepared``, on the device but for ``forest_input``."""
    n = slots.shape[0]
    k_prepare, _ = _kernels()
    gpu = state.backend.name == "gpu"
    alloc = cuda.device_array if gpu else np.zeros
    out: list[Any] = [alloc(n, dtype=np.float64) for _ in range(4)]
    out += [alloc(n, dtype=np.int64), alloc(n, dtype=np.int64), alloc(n, dtype=np.float64)]
    d_order, d_starts, d_slots, d_values, d_ts = (
        _to_device(state, a) for a in (order, starts, slots, values, ts)
    )
    if n:
        grid, block = _grid(state, starts.shape[0] - 1)
        k_prepare[grid, block](
            d_order, d_starts, d_slots, d_values, d_ts, _to_device(state, events), seasonal,
            *_device(state, names), *out,
        )  # fmt: skip
    forest_input = out[3].copy_to_host() if gpu else out[3]
    return {
        "order": d_order,
        "starts": d_starts,
        "z": out[0],
        "expected_x": out[1],
        "scale": out[2],
        "forest_input": forest_input,
        "count": out[4],
        "seen": out[5],
        "magnitude": out[6],
        "inputs": (d_slots, d_values, d_ts),
    }


def judge(
    state: Any,
    scalars: tuple[float | int, ...],
    slots: np.ndarray,
    raw: np.ndarray,
    prepared: Any,
    values: np.ndarray,
    ts: np.ndarray,
    missing: np.ndarray,
    names: tuple[str, ...],
    out: Any,
) -> None:
    """``normalize.judge`` on the device (``names``: the state arrays it takes, in order); ``out``
    (a ``normalize.NormalizedBatch`` of host arrays) receives the results."""
    _, k_judge = _kernels()
    gpu = state.backend.name == "gpu"
    results = [f.name for f in fields(out)]
    dev_out = [cuda.device_array_like(getattr(out, name)) for name in results] if gpu else None
    targets = dev_out if dev_out is not None else [getattr(out, name) for name in results]
    grid, block = _grid(state, int(prepared.starts.shape[0]) - 1)
    d_slots, d_values, d_ts = prepared.inputs  # the batch's columns, on the device since prepare
    d_raw = _to_device(state, np.ascontiguousarray(raw, dtype=np.float64))
    k_judge[grid, block](
        prepared.order, prepared.starts, d_slots, d_raw, prepared.z, d_values, prepared.expected_x,
        prepared.scale, d_ts, _to_device(state, np.ascontiguousarray(missing, dtype=np.bool_)),
        prepared.count, prepared.seen, prepared.magnitude, *scalars, *_device(state, names), *targets,
    )  # fmt: skip
    if dev_out is not None:
        for name, d in zip(results, dev_out, strict=True):
            d.copy_to_host(getattr(out, name))
