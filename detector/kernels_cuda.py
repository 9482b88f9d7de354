"""GPU build of the forest kernels: the same source as the CPU, compiled with ``numba.cuda``.

One step of a batch runs in rounds (a round takes at most one value per series, so a series that
repeats in the batch advances in time order); each round is five launches:

1. ``k_begin``   one thread per series: shingle the value, decide how the oldest point leaves;
2. ``k_delete``  one thread per (series, tree): remove it;
3. ``k_place``   one thread per series: store the new point, find an equal live point;
4. ``k_insert``  one thread per (series, tree): impute the newest coordinate, insert, CoDisp;
5. ``k_reduce``  one thread per series: average the T scores and take the median imputation,
   summing in tree order exactly as the CPU driver does.

Imported only when the GPU backend is chosen (``detector.backend``).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import cuda

from detector import kernels

_BLOCK = 128


class GpuKernels:
    """The compiled GPU kernels for one forest shape (N, K, T are compile-time constants)."""

    def __init__(self, N: int, K: int, T: int, bo: int) -> None:
        ns = kernels.compile_namespace(cuda.jit(device=True))
        tree_insert, tree_delete, tree_expect = ns["tree_insert"], ns["tree_delete"], ns["tree_expect"]
        tree_key, series_shingle = ns["tree_key"], ns["series_shingle"]
        series_plan_delete, series_place = ns["series_plan_delete"], ns["series_place"]
        estride = kernels.expect_stride(T)
        NE = (T + estride - 1) // estride
        NPATH = N
        self.T, self.N, self.K, self.NE = T, N, K, NE
        int16 = numba.int16
        float64 = numba.float64

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

        @cuda.jit
        def k_delete(sids, full, plan, n16, u16, f32, box, root, nfree, pts):
            i = cuda.grid(1)
            if i < sids.shape[0] * T:
                j = i // T
                t = i - j * T
                if full[j]:
                    si = sids[j]
                    r = plan[si, 0]
                    if r >= 0:
                        path = cuda.local.array(NPATH, int16)
                        tree_delete(
                            si * T + t,
                            si,
                            r,
                            plan[si, 1],
                            plan[si, 2] == 1,
                            K,
                            bo,
                            n16,
                            u16,
                            f32,
                            box,
                            root,
                            nfree,
                            pts,
                            path,
                        )

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
                out_expected[i] = med + offset[sids[i]]

        self._k = (k_begin, k_delete, k_place, k_insert, k_reduce)

    def update(
        self,
        a: dict[str, Any],
        v: dict[str, Any],
        seed: np.uint64,
        slots: np.ndarray[Any, Any],
        vals: np.ndarray[Any, Any],
        xp: Any,
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """One batch on the device; returns host arrays (raw_score, expected) aligned with the rows."""
        k_begin, k_delete, k_place, k_insert, k_reduce = self._k
        host = {}
        if xp is np:  # numba's CUDA simulator (tests): it copies host arguments, which would
            # split the four views of the node records, so hand it one device buffer and views.
            host = a
            a = {name: cuda.to_device(arr) for name, arr in a.items()}
            nodes = a["nodes"]
            v = {
                "n16": nodes.view(np.int16),
                "u16": nodes.view(np.uint16),
                "f32": nodes.view(np.float32),
                "box": nodes.view(v["box"].dtype),
            }
        n = slots.shape[0]
        order = np.argsort(slots, kind="stable")
        ss = slots[order]
        first = np.r_[True, ss[1:] != ss[:-1]]
        starts = np.flatnonzero(first)
        rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        out_score = np.empty(n, np.float64)
        out_expected = np.empty(n, np.float64)
        T = self.T
        for rnd in range(int(rank.max()) + 1):
            rows = order[rank == rnd]
            m = rows.shape[0]
            sids = xp.asarray(slots[rows])
            dvals = xp.asarray(vals[rows])
            full = xp.zeros(m, dtype=np.bool_)
            point = xp.zeros(m, dtype=np.int64)
            sc = xp.zeros((m, T), dtype=np.float64)
            ev = xp.zeros((m, self.NE), dtype=np.float64)
            osc = xp.empty(m, dtype=np.float64)
            oex = xp.empty(m, dtype=np.float64)
            g1 = (m + _BLOCK - 1) // _BLOCK
            gt = (m * T + _BLOCK - 1) // _BLOCK
            k_begin[g1, _BLOCK](
                sids,
                dvals,
                full,
                a["tail"],
                a["n_values"],
                a["offset"],
                a["newpt"],
                a["n_points"],
                a["rep"],
                a["count"],
                a["plan"],
                point,
            )
            k_delete[gt, _BLOCK](
                sids,
                full,
                a["plan"],
                v["n16"],
                v["u16"],
                v["f32"],
                v["box"],
                a["root"],
                a["free_head"],
                a["points"],
            )
            k_place[g1, _BLOCK](
                sids,
                full,
                a["n_points"],
                a["rep"],
                a["count"],
                a["points"],
                a["newpt"],
                a["plan"],
                v["n16"],
                v["u16"],
                v["f32"],
                a["root"],
            )
            k_insert[gt, _BLOCK](
                sids,
                full,
                point,
                seed,
                a["uid"],
                a["plan"],
                v["n16"],
                v["u16"],
                v["f32"],
                v["box"],
                a["root"],
                a["free_head"],
                a["n_alloc"],
                a["points"],
                a["count"],
                sc,
                ev,
            )
            k_reduce[g1, _BLOCK](sids, full, dvals, a["offset"], sc, ev, osc, oex)
            out_score[rows] = _host(osc)
            out_expected[rows] = _host(oex)
        for name, arr in host.items():
            arr[...] = a[name].copy_to_host()
        return out_score, out_expected


def _host(a: Any) -> np.ndarray[Any, Any]:
    if hasattr(a, "get"):
        return a.get()  # type: ignore[no-any-return]
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()  # type: ignore[no-any-return]
    return np.asarray(a)
