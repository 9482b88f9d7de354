"""GPU build of the forest kernels: the same source as the CPU, compiled with ``numba.cuda``.

A batch runs in rounds: a round takes at most one value per series, so a series that repeats in
the batch advances in time order (a batch of distinct series is one round). Trees of a series are
independent, so the tree work runs one thread per (series, tree); the series' own bookkeeping runs
one thread per series; each launch ends where the next needs all of its writes. A round is:

* for the isolation score (the default; the CPU's ``kernels_cpu.update_batch_iso``), six launches:

  1. ``k_begin``   one thread per series: shingle the value, name the point's class of trees;
  2. ``k_score``   one thread per (series, tree): the isolation score of the new point in the
     tree (``kernels.tree_score``) and, every ``expect_stride`` trees, its imputation;
  3. ``k_reduce``  one thread per series: sum the T scores in tree order (the CPU's order, so the
     same bits), the median imputation; then decide how the class's oldest point leaves;
  4. ``k_delete``  one thread per (series, tree of the class): remove it;
  5. ``k_place``   one thread per series: store the new point, find an equal live point;
  6. ``k_insert``  one thread per (series, tree of the class): insert it.

* for CoDisp over a sliding window (``raw_score="codisp"``; ``kernels_cpu.update_batch``), five:

  1. ``k_begin``   one thread per series: shingle the value, decide how the oldest point leaves;
  2. ``k_delete``  one thread per (series, tree): remove it;
  3. ``k_place``   one thread per series: store the new point, find an equal live point;
  4. ``k_insert``  one thread per (series, tree): impute the newest coordinate, insert, CoDisp;
  5. ``k_reduce``  one thread per series: average the T scores and take the median imputation,
     summing in tree order exactly as the CPU driver does.

Every launch goes through :class:`detector.cuda_launch.Launcher` (numba's own launch prepares
each argument anew: six launches of 11-18 arguments took 2.8 ms of host time a round on the H200's
host). Imported only when the GPU backend is chosen (``detector.backend``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda

from detector import kernels
from detector.cuda_launch import Launcher

_BLOCK = 128
#: Threads per block in numba's CUDA simulator, which runs each thread of a block as a Python
#: thread: small blocks make the simulated launches of the tests ten times faster.
_SIM_BLOCK = 32

#: One round: (state arrays, record views, log2 table, seed, series slots, values, rows, array
#: namespace, threads per block) -> (score, expected) on the device, aligned with the round's rows.
_Round = Callable[[dict[str, Any], dict[str, Any], Any, np.uint64, Any, Any, int, Any, int], tuple[Any, Any]]


@functools.cache
def gpu_kernels(N: int, K: int, T: int, bo: int, every: int, isolation: bool) -> GpuKernels:
    """The compiled kernels of one forest shape, built once per process (compiling takes seconds)."""
    return GpuKernels(N, K, T, bo, every, isolation)


class GpuKernels:
    """The compiled GPU kernels for one forest shape (N, K, T, every are compile-time constants).

    ``N`` is ``sample_size`` (points per tree); the store holds ``W = N * every`` points per series.
    """

    def __init__(self, N: int, K: int, T: int, bo: int, every: int = 1, isolation: bool = False) -> None:
        ns = kernels.compile_namespace(cuda.jit(device=True))
        estride = kernels.expect_stride(T)
        self.T, self.N, self.K = T, N, K
        self.NE = (T + estride - 1) // estride
        NE = self.NE
        float64 = numba.float64

        @cuda.jit(device=True)
        def median_expected(ev, i, offset_si):
            e = cuda.local.array(NE, float64)
            for k in range(NE):  # insertion sort: NE is about 10
                x = ev[i, k]
                q = k
                while q > 0 and e[q - 1] > x:
                    e[q] = e[q - 1]
                    q -= 1
                e[q] = x
            if NE % 2 == 1:
                med = e[NE // 2]
            else:
                med = 0.5 * (e[NE // 2 - 1] + e[NE // 2])
            return med + offset_si

        build = _isolation_round if isolation else _codisp_round
        #: the round and its kernels' launchers (``Launcher.fast``: whether they skip numba's
        #: argument preparation)
        self._round, self.launchers = build(ns, median_expected, N, K, T, bo, every, estride, NE)

    def update(
        self,
        a: dict[str, Any],
        v: dict[str, Any],
        lg: Any,
        seed: np.uint64,
        slots: np.ndarray[Any, Any],
        vals: np.ndarray[Any, Any],
        xp: Any,
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """One batch on the device; returns host arrays (raw_score, expected) aligned with the rows.

        ``lg`` is ``kernels_cpu.log2_table`` on the device (read by the isolation score only).
        """
        host = {}
        block = _BLOCK
        if xp is np:  # numba's CUDA simulator (tests): it copies host arguments, which would
            # split the four views of the node records, so hand it one device buffer and views.
            host = a
            block = _SIM_BLOCK
            a = {name: cuda.to_device(arr) for name, arr in a.items()}
            nodes = a["nodes"]
            v = {
                "n16": nodes.view(np.int16),
                "u16": nodes.view(np.uint16),
                "f32": nodes.view(np.float32),
                "box": nodes.view(v["box"].dtype),
            }
        n = slots.shape[0]
        out_score = np.empty(n, np.float64)
        out_expected = np.empty(n, np.float64)
        for rows in _rounds(slots):
            sids = xp.asarray(slots if rows is None else slots[rows])
            dvals = xp.asarray(vals if rows is None else vals[rows])
            m = n if rows is None else rows.shape[0]
            osc, oex = self._round(a, v, lg, seed, sids, dvals, m, xp, block)
            at = slice(None) if rows is None else rows
            out_score[at] = _host(osc)
            out_expected[at] = _host(oex)
        for name, arr in host.items():
            arr[...] = a[name].copy_to_host()
        return out_score, out_expected

    def update_device(
        self,
        a: dict[str, Any],
        v: dict[str, Any],
        lg: Any,
        seed: np.uint64,
        slots: np.ndarray[Any, Any],
        d_slots: Any,
        d_vals: Any,
        xp: Any,
        distinct: bool | None = None,
    ) -> tuple[Any, Any]:
        """:meth:`update` for a batch whose slots (``d_slots``, also ``slots`` on the host, which
        decide the rounds) and values are on the device (GPU only); returns device arrays.
        ``distinct``: True where the caller knows no slot repeats (one round, no check)."""
        rounds: list[np.ndarray[Any, Any] | None] = [None] if distinct else _rounds(slots)
        if rounds[0] is None:
            return self._round(a, v, lg, seed, d_slots, d_vals, slots.shape[0], xp, _BLOCK)
        out_score = xp.empty(slots.shape[0], dtype=np.float64)
        out_expected = xp.empty(slots.shape[0], dtype=np.float64)
        for rows in rounds:
            assert rows is not None  # several rounds: each names its rows
            at = xp.asarray(rows)
            osc, oex = self._round(a, v, lg, seed, d_slots[at], d_vals[at], rows.shape[0], xp, _BLOCK)
            out_score[at] = osc
            out_expected[at] = oex
        return out_score, out_expected


def _rounds(slots: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any] | None]:
    """The input rows of each round, in order; ``[None]`` (all rows, one round) when no slot repeats.

    Round ``r`` takes the ``r``-th value of every series that has one, so each series' values go in
    time order and a series is touched by one thread per launch.
    """
    n = slots.shape[0]
    if n <= 1 or np.bincount(slots).max() == 1:  # the common batch: one value per series
        return [None]
    order = np.argsort(slots, kind="stable")
    ss = slots[order]
    first = np.r_[True, ss[1:] != ss[:-1]]
    starts = np.flatnonzero(first)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return [order[rank == rnd] for rnd in range(int(rank.max()) + 1)]


def _grid(threads: int, block: int) -> int:
    return max(1, (threads + block - 1) // block)


def _delete_kernel(tree_delete: Any, N: int, K: int, T: int, bo: int, every: int) -> Any:
    """One thread per (series, tree of the new point's class): delete the series' leaving point.

    The trees of class ``c`` are ``c, c + every, ...``; with ``every`` 1 (CoDisp's sliding window)
    the one class is every tree and ``cls`` is all zeros.
    """
    TC = (T + every - 1) // every  # the most trees a class has
    NPATH = N  # a tree holds N points, so a root-to-leaf path has fewer than N nodes
    int16 = numba.int16

    @cuda.jit
    def k_delete(sids, full, cls, plan, n16, u16, f32, box, root, nfree, pts):
        i = cuda.grid(1)
        if i < sids.shape[0] * TC:
            j = i // TC
            t = cls[j] + (i - j * TC) * every
            if full[j] and t < T:
                si = sids[j]
                r = plan[si, 0]
                if r >= 0:
                    path = cuda.local.array(NPATH, int16)
                    tree_delete(
                        si * T + t, si, r, plan[si, 1], plan[si, 2] == 1, K, bo, n16, u16, f32, box, root,
                        nfree, pts, path,
                    )  # fmt: skip

    return k_delete


def _isolation_round(
    ns: dict[str, Any],
    median_expected: Any,
    N: int,
    K: int,
    T: int,
    bo: int,
    every: int,
    estride: int,
    NE: int,
) -> tuple[_Round, tuple[Launcher, ...]]:
    """The six launches of an isolation-score round (see the module docstring)."""
    tree_insert, tree_delete, tree_score = ns["tree_insert"], ns["tree_delete"], ns["tree_score"]
    tree_expect_new, tree_key, series_shingle = ns["tree_expect_new"], ns["tree_key"], ns["series_shingle"]
    series_plan_delete, series_place_class = ns["series_plan_delete"], ns["series_place_class"]
    slot_class = ns["slot_class"]
    W = N * every
    TC = (T + every - 1) // every  # the most trees a class has

    @cuda.jit
    def k_begin(sids, vals, full, point, cls, tail, nvals, offset, newpt, npts):
        i = cuda.grid(1)
        if i < sids.shape[0]:
            si = sids[i]
            f = series_shingle(si, vals[i], K, tail, nvals, offset, newpt)
            full[i] = f
            if f:
                p = npts[si]
                point[i] = p
                cls[i] = slot_class(p % W, every)

    @cuda.jit
    def k_score(sids, full, n16, u16, f32, box, root, pts, cnt, newpt, lg, sc, ev):
        i = cuda.grid(1)
        if i < sids.shape[0] * T:
            j = i // T
            t = i - j * T
            if full[j]:
                si = sids[j]
                g = si * T + t
                sc[j, t] = tree_score(g, si, K, bo, n16, u16, f32, box, root, pts, cnt, newpt, lg)
                if t % estride == 0:
                    ev[j, t // estride] = tree_expect_new(g, si, K, n16, u16, f32, pts, root, newpt)

    @cuda.jit
    def k_reduce(sids, full, vals, offset, sc, ev, npts, rep, cnt, plan, out_score, out_expected):
        i = cuda.grid(1)
        if i < sids.shape[0]:
            if not full[i]:
                out_score[i] = 0.0
                out_expected[i] = vals[i]
                return
            si = sids[i]
            score = 0.0
            for t in range(T):  # tree order, as kernels_cpu.score_trees sums
                score += sc[i, t]
            out_score[i] = score / T
            out_expected[i] = median_expected(ev, i, offset[si])
            series_plan_delete(si, W, npts, rep, cnt, plan)

    k_delete = _delete_kernel(tree_delete, N, K, T, bo, every)

    @cuda.jit
    def k_place(sids, full, cls, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root):
        i = cuda.grid(1)
        if i < sids.shape[0] and full[i]:
            series_place_class(
                sids[i], W, K, T, cls[i], npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root
            )

    @cuda.jit
    def k_insert(sids, full, cls, point, seed, uid, plan, n16, u16, f32, box, root, nfree, nalloc, pts, cnt):
        i = cuda.grid(1)
        if i < sids.shape[0] * TC:
            j = i // TC
            t = cls[j] + (i - j * TC) * every
            if full[j] and t < T:
                si = sids[j]
                key = tree_key(seed, uid[si], t)
                tree_insert(
                    si * T + t,
                    si,
                    plan[si, 3],
                    plan[si, 4] == 1,
                    key,
                    point[j],
                    K,
                    bo,
                    n16,
                    u16,
                    f32,
                    box,
                    root,
                    nfree,
                    nalloc,
                    pts,
                    cnt,
                )

    launchers = tuple(Launcher(k) for k in (k_begin, k_score, k_reduce, k_delete, k_place, k_insert))
    launch_begin, launch_score, launch_reduce, launch_delete, launch_place, launch_insert = launchers

    def run(
        a: dict[str, Any],
        v: dict[str, Any],
        lg: Any,
        seed: np.uint64,
        sids: Any,
        dvals: Any,
        m: int,
        xp: Any,
        block: int,
    ) -> tuple[Any, Any]:
        full = xp.zeros(m, dtype=np.bool_)
        point = xp.zeros(m, dtype=np.int64)
        cls = xp.zeros(m, dtype=np.int64)
        sc = xp.zeros((m, T), dtype=np.float64)
        ev = xp.zeros((m, NE), dtype=np.float64)
        osc = xp.empty(m, dtype=np.float64)
        oex = xp.empty(m, dtype=np.float64)
        n16, u16, f32, box = v["n16"], v["u16"], v["f32"], v["box"]
        g1, gt, gc = _grid(m, block), _grid(m * T, block), _grid(m * TC, block)
        launch_begin(
            g1, block, sids, dvals, full, point, cls, a["tail"], a["n_values"], a["offset"], a["newpt"],
            a["n_points"]
        )  # fmt: skip
        launch_score(
            gt, block, sids, full, n16, u16, f32, box, a["root"], a["points"], a["count"], a["newpt"], lg, sc,
            ev
        )  # fmt: skip
        launch_reduce(
            g1, block, sids, full, dvals, a["offset"], sc, ev, a["n_points"], a["rep"], a["count"], a["plan"],
            osc, oex
        )  # fmt: skip
        launch_delete(
            gc, block, sids, full, cls, a["plan"], n16, u16, f32, box, a["root"], a["free_head"], a["points"]
        )  # fmt: skip
        launch_place(
            g1, block, sids, full, cls, a["n_points"], a["rep"], a["count"], a["points"], a["newpt"],
            a["plan"], n16, u16, f32, a["root"],
        )  # fmt: skip
        launch_insert(
            gc, block, sids, full, cls, point, seed, a["uid"], a["plan"], n16, u16, f32, box, a["root"],
            a["free_head"], a["n_alloc"], a["points"], a["count"],
        )  # fmt: skip
        return osc, oex

    return run, launchers


def _codisp_round(
    ns: dict[str, Any],
    median_expected: Any,
    N: int,
    K: int,
    T: int,
    bo: int,
    every: int,
    estride: int,
    NE: int,
) -> tuple[_Round, tuple[Launcher, ...]]:
    """The five launches of a CoDisp sliding-window round (see the module docstring)."""
    tree_insert, tree_delete, tree_expect = ns["tree_insert"], ns["tree_delete"], ns["tree_expect"]
    tree_key, series_shingle = ns["tree_key"], ns["series_shingle"]
    series_plan_delete, series_place = ns["series_plan_delete"], ns["series_place"]

    @cuda.jit
    def k_begin(sids, vals, full, tail, nvals, offset, newpt, npts, rep, cnt, plan, point):
        i = cuda.grid(1)
        if i < sids.shape[0]:
            si = sids[i]
            f = series_shingle(si, vals[i], K, tail, nvals, offset, newpt)
            full[i] = f
            if f:
                point[i] = npts[si]
                series_plan_delete(si, N, npts, rep, cnt, plan)

    k_delete = _delete_kernel(tree_delete, N, K, T, bo, 1)  # one class: every tree

    @cuda.jit
    def k_place(sids, full, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root):
        i = cuda.grid(1)
        if i < sids.shape[0] and full[i]:
            series_place(sids[i], N, K, T, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root)

    @cuda.jit
    def k_insert(
        sids,
        full,
        point,
        seed,
        uid,
        plan,
        n16,
        u16,
        f32,
        box,
        root,
        nfree,
        nalloc,
        pts,
        cnt,
        sc,
        ev,
    ):
        i = cuda.grid(1)
        if i < sids.shape[0] * T:
            j = i // T
            t = i - j * T
            if full[j]:
                si = sids[j]
                g = si * T + t
                s = plan[si, 3]
                if t % estride == 0:
                    ev[j, t // estride] = tree_expect(g, si, s, K, n16, u16, f32, pts, root)
                key = tree_key(seed, uid[si], t)
                sc[j, t] = tree_insert(
                    g,
                    si,
                    s,
                    plan[si, 4] == 1,
                    key,
                    point[j],
                    K,
                    bo,
                    n16,
                    u16,
                    f32,
                    box,
                    root,
                    nfree,
                    nalloc,
                    pts,
                    cnt,
                )

    @cuda.jit
    def k_reduce(sids, full, vals, offset, sc, ev, out_score, out_expected):
        i = cuda.grid(1)
        if i < sids.shape[0]:
            if not full[i]:
                out_score[i] = 0.0
                out_expected[i] = vals[i]
                return
            score = 0.0
            for t in range(T):
                score += sc[i, t]
            out_score[i] = score / T
            out_expected[i] = median_expected(ev, i, offset[sids[i]])

    launchers = tuple(Launcher(k) for k in (k_begin, k_delete, k_place, k_insert, k_reduce))
    launch_begin, launch_delete, launch_place, launch_insert, launch_reduce = launchers

    def run(
        a: dict[str, Any],
        v: dict[str, Any],
        lg: Any,
        seed: np.uint64,
        sids: Any,
        dvals: Any,
        m: int,
        xp: Any,
        block: int,
    ) -> tuple[Any, Any]:
        full = xp.zeros(m, dtype=np.bool_)
        point = xp.zeros(m, dtype=np.int64)
        sc = xp.zeros((m, T), dtype=np.float64)
        ev = xp.zeros((m, NE), dtype=np.float64)
        osc = xp.empty(m, dtype=np.float64)
        oex = xp.empty(m, dtype=np.float64)
        n16, u16, f32, box = v["n16"], v["u16"], v["f32"], v["box"]
        g1, gt = _grid(m, block), _grid(m * T, block)
        launch_begin(
            g1, block, sids, dvals, full, a["tail"], a["n_values"], a["offset"], a["newpt"], a["n_points"],
            a["rep"], a["count"], a["plan"], point,
        )  # fmt: skip
        cls = xp.zeros(m, dtype=np.int64)
        launch_delete(
            gt, block, sids, full, cls, a["plan"], n16, u16, f32, box, a["root"], a["free_head"], a["points"]
        )  # fmt: skip
        launch_place(
            g1, block, sids, full, a["n_points"], a["rep"], a["count"], a["points"], a["newpt"], a["plan"],
            n16, u16, f32, a["root"],
        )  # fmt: skip
        launch_insert(
            gt, block, sids, full, point, seed, a["uid"], a["plan"], n16, u16, f32, box, a["root"],
            a["free_head"], a["n_alloc"], a["points"], a["count"], sc, ev,
        )  # fmt: skip
        launch_reduce(g1, block, sids, full, dvals, a["offset"], sc, ev, osc, oex)
        return osc, oex

    return run, launchers


def _host(a: Any) -> np.ndarray[Any, Any]:
    if hasattr(a, "get"):
        return a.get()  # type: ignore[no-any-return]
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()  # type: ignore[no-any-return]
    return np.asarray(a)
