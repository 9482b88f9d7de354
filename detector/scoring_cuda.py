"""GPU build of the scoring stage's kernels: the source of detector/scoring_kernels.py compiled
with ``numba.cuda``, one thread per series of the batch (its points in input order).

The state (``NormalizerState.arrays``) lives on the device, and so does everything between the
passes: ``prepare`` copies the batch's columns in (one copy from page-locked memory), its outputs
(the forest's input among them) stay on the device for the forest and ``judge``, and ``judge``
brings the results back in one copy into page-locked memory, whose rows are the result arrays.
Launches go through :class:`detector.cuda_launch.Launcher` (numba prepares 45-60 arguments per
launch otherwise). Imported only for the GPU backend and the CUDA simulator (tests), where the same
kernels run on host arrays through numba's own launch.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import cuda

from detector import scoring_cpu, scoring_kernels
from detector.cuda_launch import Launcher

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


@functools.cache
def _launchers() -> tuple[Launcher, Launcher]:
    """(prepare, judge) launchers, one per process."""
    k_prepare, k_judge = _kernels()
    return Launcher(k_prepare), Launcher(k_judge)


def _grid(state: Any, runs: int) -> tuple[int, int]:
    """(blocks, threads per block) for one thread per run."""
    block = _BLOCK if state.backend.name == "gpu" else _SIM_BLOCK
    return (runs + block - 1) // block, block


#: ``NormalizedBatch``'s fields the judge kernel writes, in its argument order, and where each
#: lives in the results buffer (``_blocks``: two views of it): (block, row, dtype): ``wide`` rows
#: are 8 bytes a point, ``narrow`` rows 1 byte; the wide block's last row carries the raw score.
_RESULTS = (
    ("anomaly_score", "wide", 0, np.float64),
    ("decision", "narrow", 0, np.int8),
    ("confidence", "wide", 1, np.float64),
    ("inference", "narrow", 1, np.bool_),
    ("processed_points", "wide", 2, np.int64),
    ("expected_value", "wide", 3, np.float64),
    ("expected_low", "wide", 4, np.float64),
    ("expected_high", "wide", 5, np.float64),
    ("reason", "narrow", 2, np.int8),
    ("value_score", "wide", 6, np.float64),
    ("forest_score", "wide", 7, np.float64),
)
_WIDE_ROWS, _NARROW_ROWS = 9, 3


class _Staging:
    """Page-locked host buffers for the batch's columns and the device's ``0, 1, ...`` index
    (the order and run starts of a batch of distinct series), grown as batches grow."""

    def __init__(self) -> None:
        self.capacity = 0
        self.columns: np.ndarray = np.zeros(0)
        self.missing: np.ndarray = np.zeros(0, dtype=np.bool_)
        self.index: Any = None

    def ensure(self, n: int) -> _Staging:
        if n > self.capacity:
            import cupy
            import cupyx

            cap = max(n, 2 * self.capacity, 1024)
            self.columns = cupyx.empty_pinned(4 * cap, dtype=np.float64)
            self.missing = cupyx.empty_pinned(cap, dtype=np.bool_)
            self.index = cupy.arange(cap + 1, dtype=np.int64)
            self.capacity = cap
        return self


def _staging(state: Any, n: int) -> _Staging:
    stage = state.__dict__.get("_staging")
    if stage is None:
        stage = state.__dict__["_staging"] = _Staging()
    return stage.ensure(n)  # type: ignore[no-any-return]


def _copy(dst: Any, src: Any, nbytes: int, kind: str) -> None:
    """One asynchronous copy on the default stream (``h2d``, ``d2h`` or ``d2d``)."""
    import cupy

    rt = cupy.cuda.runtime
    if kind == "h2d":
        rt.memcpyAsync(dst.data.ptr, src.ctypes.data, nbytes, rt.memcpyHostToDevice, 0)
    elif kind == "d2h":
        rt.memcpyAsync(dst.ctypes.data, src.data.ptr, nbytes, rt.memcpyDeviceToHost, 0)
    else:
        rt.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, rt.memcpyDeviceToDevice, 0)


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
    fields of ``normalize.Prepared``, every one on the device on a GPU (host arrays, and numba's
    own launch, in the simulator), with ``inputs`` the batch's slots, values and timestamps there."""
    n = slots.shape[0]
    runs = starts.shape[0] - 1
    if state.backend.name != "gpu":  # the simulator: the host arrays as they are
        d_order, d_starts, d_slots, d_values, d_ts, d_events = order, starts, slots, values, ts, events
        f, c = np.zeros((5, n)), np.zeros((2, n), dtype=np.int64)
    else:
        import cupy

        stage = _staging(state, n)
        host = stage.columns[: 4 * n].reshape(4, n)
        scoring_cpu.stage_columns(slots, values, ts, events, host, host.view(np.int64))
        cols = cupy.empty((4, n), dtype=np.float64)
        _copy(cols, host, host.nbytes, "h2d")
        d_slots, d_values, d_ts, d_events = cols[0].view(np.int64), cols[1], cols[2].view(np.int64), cols[3]
        if runs == n:  # distinct series, a point each: any order is the same work
            d_order, d_starts = stage.index[:n], stage.index[: n + 1]
        else:
            d_order, d_starts = cupy.asarray(order), cupy.asarray(starts)
        f, c = cupy.empty((5, n), dtype=np.float64), cupy.empty((2, n), dtype=np.int64)
    out = (f[0], f[1], f[2], f[3], c[0], c[1], f[4])  # z, expected_x, scale, forest input, counts, c
    if n:
        grid, block = _grid(state, runs)
        k_prepare, _ = _launchers()
        k_prepare(
            grid, block, d_order, d_starts, d_slots, d_values, d_ts, d_events, seasonal,
            *(state.arrays[name] for name in names), *out,
        )  # fmt: skip
    return {
        "order": d_order,
        "starts": d_starts,
        "z": f[0],
        "expected_x": f[1],
        "scale": f[2],
        "forest_input": f[3],
        "count": c[0],
        "seen": c[1],
        "magnitude": f[4],
        "inputs": (d_slots, d_values, d_ts),
    }


def judge(
    state: Any,
    scalars: tuple[float | int, ...],
    raw: Any,
    prepared: Any,
    missing: np.ndarray,
    names: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """``normalize.judge`` on the device (``names``: the state arrays it takes, in order), after
    :func:`prepare` (whose ``inputs`` it reads): ``NormalizedBatch``'s fields as host arrays.

    ``raw`` (the forest's scores) may be on the device or the host; it comes back as ``raw_score``.
    On a GPU the results come back in one copy (8-byte fields, then 1-byte ones) into a
    page-locked buffer from CuPy's pool, whose rows are the arrays returned: the buffer returns to
    the pool when the last of them is dropped.
    """
    n = int(missing.shape[0])
    grid, block = _grid(state, int(prepared.starts.shape[0]) - 1)
    d_slots, d_values, d_ts = prepared.inputs
    _, k_judge = _launchers()
    head = (prepared.order, prepared.starts, d_slots)
    mid = (prepared.z, d_values, prepared.expected_x, prepared.scale, d_ts)
    counts = (prepared.count, prepared.seen, prepared.magnitude)
    if state.backend.name != "gpu":  # the simulator: host arrays
        host_raw = np.ascontiguousarray(raw, dtype=np.float64)
        res = {name: np.zeros(n, dtype=dt) for name, _, _, dt in _RESULTS}
        k_judge(
            grid, block, *head, host_raw, *mid, np.ascontiguousarray(missing, dtype=np.bool_), *counts,
            *scalars, *(state.arrays[name] for name in names), *res.values(),
        )  # fmt: skip
        return {**res, "raw_score": host_raw}
    import cupy
    import cupyx

    stage = _staging(state, n)
    stage.missing[:n] = missing
    d_missing = cupy.empty(n, dtype=np.bool_)
    _copy(d_missing, stage.missing, n, "h2d")
    nbytes = (8 * _WIDE_ROWS + _NARROW_ROWS) * n
    device = cupy.empty(nbytes, dtype=np.uint8)
    blocks = _blocks(device, n)
    if isinstance(raw, np.ndarray):
        raw = cupy.asarray(raw, dtype=np.float64)
    k_judge(
        grid, block, *head, raw, *mid, d_missing, *counts, *scalars,
        *(state.arrays[name] for name in names),
        *(blocks[b][row].view(dt) for _, b, row, dt in _RESULTS),
    )  # fmt: skip
    _copy(blocks["wide"][_WIDE_ROWS - 1], raw, 8 * n, "d2d")
    host_bytes = cupyx.empty_pinned(nbytes, dtype=np.uint8)
    _copy(host_bytes, device, nbytes, "d2h")
    cupy.cuda.runtime.streamSynchronize(0)
    host = _blocks(host_bytes, n)
    res = {name: host[b][row].view(dt) for name, b, row, dt in _RESULTS}
    return {**res, "raw_score": host["wide"][_WIDE_ROWS - 1]}


def _blocks(buffer: Any, n: int) -> dict[str, Any]:
    """The results' two blocks as views of one byte buffer (device or host): ``wide`` float64[9,
    n] first, then ``narrow`` uint8[3, n]; one copy brings both back."""
    cut = 8 * _WIDE_ROWS * n
    return {
        "wide": buffer[:cut].view(np.float64).reshape(_WIDE_ROWS, n),
        "narrow": buffer[cut:].reshape(_NARROW_ROWS, n),
    }
