"""CPU build of the forest kernels: ``numba.njit`` device functions and one parallel driver.

The driver runs ``prange`` over the distinct series of a batch (series are independent); inside a
series its points go in time order, and for each point every tree is updated in turn: delete the
oldest point, impute the newest coordinate, insert and score the new point.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from detector import kernels

_K = kernels.compile_namespace(numba.njit(cache=True, nogil=True, inline="always"))

tree_insert = _K["tree_insert"]
tree_delete = _K["tree_delete"]
tree_expect = _K["tree_expect"]
tree_key = _K["tree_key"]
series_shingle = _K["series_shingle"]
series_plan_delete = _K["series_plan_delete"]
series_place = _K["series_place"]


@numba.njit(cache=True, parallel=True, nogil=True)
def update_batch(order, starts, values, seed, T, N, K, uid,  # type: ignore[no-untyped-def]
                 tail, nvals, npts, offset, newpt, plan, pts, rep, cnt,
                 left, right, cdim, cval, mass, lo, hi, root, nfree, nalloc,
                 out_score, out_expected, slots_sorted):
    """Process a batch: ``order[starts[i]:starts[i+1]]`` are the input rows of series ``i``.

    ``slots_sorted[starts[i]]`` is that series' slot. Writes ``out_score``/``out_expected`` at
    the input rows.
    """
    nser = starts.shape[0] - 1
    for ii in numba.prange(nser):
        si = slots_sorted[starts[ii]]
        path = np.empty(N, np.int16)
        ev = np.empty(T, np.float64)
        for k in range(starts[ii], starts[ii + 1]):
            row = order[k]
            value = values[row]
            if not series_shingle(si, value, K, tail, nvals, offset, newpt):
                out_score[row] = 0.0
                out_expected[row] = value
                continue
            point = npts[si]
            series_plan_delete(si, N, npts, rep, cnt, plan)
            r = plan[si, 0]
            if r >= 0:
                newrep = plan[si, 1]
                full = plan[si, 2] == 1
                for t in range(T):
                    tree_delete(si * T + t, si, r, newrep, full, K, left, right, cdim, cval, mass,
                                lo, hi, root, nfree, pts, path)
            series_place(si, N, K, npts, rep, cnt, pts, newpt, plan)
            s = plan[si, 3]
            dup = plan[si, 4] == 1
            score = 0.0
            for t in range(T):
                g = si * T + t
                ev[t] = tree_expect(g, si, s, K, left, right, cdim, cval, mass, pts, cnt, root)
                key = tree_key(seed, uid[si], t)
                score += tree_insert(g, si, s, dup, key, point, K, left, right, cdim, cval, mass,
                                     lo, hi, root, nfree, nalloc, pts, cnt)
            out_score[row] = score / T
            ev.sort()
            if T % 2 == 1:
                med = ev[T // 2]
            else:
                med = 0.5 * (ev[T // 2 - 1] + ev[T // 2])
            out_expected[row] = med + offset[si]


def warm_up() -> Any:
    """Nothing to do: compilation happens (or loads from the cache) at the first call."""
    return None
