"""CPU build of the forest kernels: ``numba.njit`` device functions and the parallel drivers.

A driver runs ``prange`` over the distinct series of a batch (series are independent); inside a
series its points go in time order. Two drivers, one per raw score (``ForestConfig.raw_score``):

* ``update_batch_iso`` (the default, ``isolation``): score the new point in every tree (AWS RCF's
  isolation score, ``kernels.tree_score``), impute its newest coordinate, then store it and insert
  it into the trees of its class only (``kernels.slot_class``: one class in ``insert_every``),
  deleting the class's oldest point first.
* ``update_batch`` (``codisp``, rrcf's sliding window): for each point every tree is updated in
  turn: delete the oldest point, impute the newest coordinate (every ``expect_stride`` trees),
  insert and score the new point (its CoDisp).

``gather_records`` / ``scatter_records`` move node records between the packed layout and the
layout-free state arrays (``Forest.to_state_many`` / ``from_state_many``).
"""

from __future__ import annotations

import types as pytypes
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from detector import kernels


@intrinsic
def prefetch(typingctx, arr, i, j, k):
    """Hint the CPU to load the cache line of ``arr[i, j, k]`` (LLVM's prefetch, read, keep)."""
    sig = types.void(arr, i, j, k)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        inds = [
            context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:], strict=True)
        ]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, inds)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(
            fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        )
        return context.get_dummy_value()

    return sig, codegen


# inline="always": numba inlines at its IR level, which removes the per-call reference counting
# of a dozen array arguments (measured: 3.8 -> 2.5 us per tree step before the other changes).
_K = kernels.compile_namespace(numba.njit(cache=True, nogil=True, inline="always"))

node_cdim = _K["node_cdim"]
tree_insert = _K["tree_insert"]
tree_delete = _K["tree_delete"]
tree_expect = _K["tree_expect"]
tree_expect_new = _K["tree_expect_new"]
tree_score = _K["tree_score"]
leaf_score = _K["leaf_score"]
tree_key = _K["tree_key"]
series_shingle = _K["series_shingle"]
series_plan_delete = _K["series_plan_delete"]
series_place = _K["series_place"]
series_place_class = _K["series_place_class"]
subtree_mass = _K["subtree_mass"]
slot_class = _K["slot_class"]


@numba.njit(cache=True, nogil=True, inline="always")
def prewalk(si, T, r, K, bo, n16, u16, f32, box, pts, newpt, root, refs):
    """Touch the nodes the step will visit, all trees in lockstep, before doing the work.

    A tree walk is a chain of dependent loads, and at thousands of series the trees are not in
    cache: walking the T trees one level at a time keeps T independent loads in flight instead of
    one, so the real passes that follow find their nodes in cache. Walks the path of the leaving
    point (``r``, or none when ``r < 0``) and of the new point (``newpt[si]``).
    """
    g0 = si * T
    for t in range(T):
        refs[t] = root[g0 + t] if r >= 0 else 0
        refs[T + t] = root[g0 + t]
        top = max(np.int64(root[g0 + t]) - 1, 0)
        prefetch(n16, g0 + t, top, 0)
    rr = max(r, 0)
    busy = True
    last = 0
    # Branch-free inner loop (selects, no jumps): a mispredicted branch would squash the loads
    # issued after it, and those loads in flight are the whole point.
    while busy:
        busy = False
        for t in range(T):
            g = g0 + t
            ref = np.int64(refs[t])
            act = ref > 0
            m = max(ref - 1, 0)
            last += box[g, m, bo + 2 * K - 1]  # the record's far end may be on the next line
            side = np.int64(pts[si, rr, node_cdim(u16, g, m)] > f32[g, m, 2])
            nxt = np.int64(n16[g, m, side]) if act else ref
            refs[t] = nxt
            busy |= act
            # Ask for the next node now; the loop comes back to this walk only after the other
            # trees' steps, by when the line has arrived: many misses in flight, not one.
            nm = max(nxt - 1, 0)
            prefetch(n16, g, nm, 0)
            prefetch(box, g, nm, bo + 2 * K - 1)
            ref = np.int64(refs[T + t])
            act = ref > 0
            m = max(ref - 1, 0)
            last += box[g, m, bo + 2 * K - 1]
            side = np.int64(newpt[si, node_cdim(u16, g, m)] > f32[g, m, 2])
            nxt = np.int64(n16[g, m, side]) if act else ref
            refs[T + t] = nxt
            busy |= act
            nm = max(nxt - 1, 0)
            prefetch(n16, g, nm, 0)
            prefetch(box, g, nm, bo + 2 * K - 1)
    return last


@numba.njit(cache=True, nogil=True, inline="always")
def score_trees(si, T, K, bo, n16, u16, f32, box, root, pts, cnt, newpt, lg, refs, acc, q, tmass, dep):
    """``kernels.tree_score`` of ``newpt[si]`` in the T trees of series ``si``, summed.

    The same arithmetic in the same order per tree (so the same bits), but the trees are walked
    in lockstep, one level at a time, each next node prefetched: a walk is a chain of dependent
    loads, and at thousands of series the trees are not in cache, so keeping T walks in flight
    instead of one is what makes scoring every point in every tree affordable (see ``prewalk``).
    """
    g0 = si * T
    for t in range(T):
        r = np.int64(root[g0 + t])
        refs[t] = r
        acc[t] = 0.0
        q[t] = 1.0
        dep[t] = 0
        tmass[t] = np.float64(subtree_mass(g0 + t, si, r, u16, cnt)) if r != 0 else 0.0
        prefetch(n16, g0 + t, max(r - 1, 0), 0)
    busy = True
    while busy:
        busy = False
        for t in range(T):
            ref = np.int64(refs[t])
            if ref <= 0:
                continue
            g = g0 + t
            m = ref - 1
            grown = 0.0
            span = 0.0
            for d in range(K):
                x = np.float64(newpt[si, d])
                a = np.float64(pts[si, box[g, m, bo + d], d])
                b = np.float64(pts[si, box[g, m, bo + K + d], d])
                grown += max(b, x) - min(a, x)
                span += b - a
            if grown > span:
                p = (grown - span) / grown
                acc[t] += q[t] * p / (dep[t] + 1.0)
                q[t] *= 1.0 - p
            if newpt[si, node_cdim(u16, g, m)] <= f32[g, m, 2]:
                nxt = np.int64(n16[g, m, 0])
            else:
                nxt = np.int64(n16[g, m, 1])
            refs[t] = nxt
            dep[t] += 1
            busy = True
            nm = max(nxt - 1, 0)
            prefetch(n16, g, nm, 0)
            prefetch(box, g, nm, bo + 2 * K - 1)
    total = 0.0
    for t in range(T):
        ref = np.int64(refs[t])
        if ref == 0:
            continue  # an empty tree scores 0
        total += leaf_score(si, K, ref, dep[t], acc[t], q[t], tmass[t], pts, cnt, newpt, lg)
    return total


@numba.njit(cache=True, parallel=True, nogil=True)
def update_batch(
    order,
    starts,
    slots_sorted,
    values,
    seed,
    T,
    N,
    K,
    bo,
    estride,
    uid,
    tail,
    nvals,
    npts,
    offset,
    newpt,
    plan,
    pts,
    rep,
    cnt,
    n16,
    u16,
    f32,
    box,
    root,
    nfree,
    nalloc,
    out_score,
    out_expected,
    prefetch,
):
    """Process a batch: ``order[starts[i]:starts[i+1]]`` are the input rows of the i-th series.

    ``slots_sorted[starts[i]]`` is that series' slot. Writes ``out_score``/``out_expected`` at
    the input rows.
    """
    nser = starts.shape[0] - 1
    ne = (T + estride - 1) // estride
    for ii in numba.prange(nser):
        si = slots_sorted[starts[ii]]
        path = np.empty(N, np.int16)
        ev = np.empty(ne, np.float64)
        refs = np.empty(2 * T, np.int64)
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
            if prefetch:
                refs[0] = prewalk(si, T, r, K, bo, n16, u16, f32, box, pts, newpt, root, refs)
            if r >= 0:
                newrep = plan[si, 1]
                full = plan[si, 2] == 1
                for t in range(T):
                    tree_delete(
                        si * T + t, si, r, newrep, full, K, bo, n16, u16, f32, box, root, nfree, pts, path
                    )
            series_place(si, N, K, T, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root)
            s = plan[si, 3]
            dup = plan[si, 4] == 1
            score = 0.0
            for t in range(T):
                g = si * T + t
                if t % estride == 0:
                    ev[t // estride] = tree_expect(g, si, s, K, n16, u16, f32, pts, root)
                key = tree_key(seed, uid[si], t)
                score += tree_insert(
                    g, si, s, dup, key, point, K, bo, n16, u16, f32, box, root, nfree, nalloc, pts, cnt
                )
            out_score[row] = score / T
            ev.sort()
            if ne % 2 == 1:
                med = ev[ne // 2]
            else:
                med = 0.5 * (ev[ne // 2 - 1] + ev[ne // 2])
            out_expected[row] = med + offset[si]


@numba.njit(cache=True, parallel=True, nogil=True)
def update_batch_iso(
    order,
    starts,
    slots_sorted,
    values,
    seed,
    T,
    W,
    K,
    bo,
    estride,
    every,
    uid,
    tail,
    nvals,
    npts,
    offset,
    newpt,
    plan,
    pts,
    rep,
    cnt,
    n16,
    u16,
    f32,
    box,
    root,
    nfree,
    nalloc,
    lg,
    out_score,
    out_expected,
):
    """Process a batch with the isolation score and per-class insertion (see the module docstring).

    The point store holds the last ``W = sample_size * every`` points of a series; each point
    belongs to one class of trees (``kernels.slot_class``; the trees ``t`` with ``t % every == c``),
    which holds ``sample_size`` points spread over ``W`` points of history. Every point is scored
    by every tree before it is stored.
    """
    nser = starts.shape[0] - 1
    ne = (T + estride - 1) // estride
    for ii in numba.prange(nser):
        si = slots_sorted[starts[ii]]
        path = np.empty(W, np.int16)
        ev = np.empty(ne, np.float64)
        refs = np.empty(T, np.int64)
        acc = np.empty(T, np.float64)
        qq = np.empty(T, np.float64)
        tmass = np.empty(T, np.float64)
        dep = np.empty(T, np.int64)
        for k in range(starts[ii], starts[ii + 1]):
            row = order[k]
            value = values[row]
            if not series_shingle(si, value, K, tail, nvals, offset, newpt):
                out_score[row] = 0.0
                out_expected[row] = value
                continue
            point = npts[si]
            c = slot_class(point % W, every)
            score = score_trees(
                si, T, K, bo, n16, u16, f32, box, root, pts, cnt, newpt, lg, refs, acc, qq, tmass, dep
            )
            for t in range(0, T, estride):
                ev[t // estride] = tree_expect_new(si * T + t, si, K, n16, u16, f32, pts, root, newpt)
            series_plan_delete(si, W, npts, rep, cnt, plan)
            r = plan[si, 0]
            if r >= 0:
                newrep = plan[si, 1]
                full = plan[si, 2] == 1
                for t in range(c, T, every):
                    tree_delete(
                        si * T + t, si, r, newrep, full, K, bo, n16, u16, f32, box, root, nfree, pts, path
                    )
            series_place_class(si, W, K, T, c, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root)
            s = plan[si, 3]
            dup = plan[si, 4] == 1
            for t in range(c, T, every):
                key = tree_key(seed, uid[si], t)
                tree_insert(
                    si * T + t,
                    si,
                    s,
                    dup,
                    key,
                    point,
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
            out_score[row] = score / T
            ev.sort()
            if ne % 2 == 1:
                med = ev[ne // 2]
            else:
                med = 0.5 * (ev[ne // 2 - 1] + ev[ne // 2])
            out_expected[row] = med + offset[si]


def _renamed(f: Any, name: str) -> Any:
    """A copy of ``f`` under another name: numba's on-disk cache is keyed by the function's
    qualified name, so two dispatchers of one function (threaded and serial) would load each
    other's machine code."""
    copy = pytypes.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    copy.__qualname__ = name
    return copy


#: The same driver without threads, for batches of a few series: waking the thread pool costs
#: more than it saves there, and on a busy machine a descheduled worker stalls the call for a
#: time slice (single-series latency p50 went from ~0.17 ms to ~8 ms in such runs).
update_batch_serial = numba.njit(cache=True, nogil=True)(
    _renamed(update_batch.py_func, "update_batch_serial")
)

update_batch_iso_serial = numba.njit(cache=True, nogil=True)(
    _renamed(update_batch_iso.py_func, "update_batch_iso_serial")
)

#: Fewer distinct series than this in a batch run on the calling thread.
PARALLEL_MIN_SERIES = 16


@numba.njit(cache=True)
def log2_table(n):
    """float64[n]: ``log2(i)`` for i = 0 .. n-1, the ``lg`` argument of ``kernels.tree_score``.

    Computed here, by the CPU build's own ``log2``, and read by both builds: the isolation score
    takes the log2 of integer masses only, and CUDA's ``log2`` may differ from the host's in the
    last bit, which would break the GPU's bit-identity with the CPU. (These are the values the CPU
    kernels computed inline before, so CPU scores did not change.)
    """
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = np.log2(np.float64(i))
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def gather_records(
    trees, rows, K, bo, n16, u16, f32, box, left, right, mass_l, mass_r, cut_dim, cut_val, box_lo, box_hi
):
    """Decode the first ``rows[i]`` node records of tree ``trees[i]`` into flat field arrays, tree
    after tree (the layout-free state format; see ``Forest.to_state_many``). One pass over the
    records, trees in parallel: a checkpoint's capture runs on the worker's thread."""
    ends = np.cumsum(rows)
    for i in numba.prange(trees.shape[0]):
        g = trees[i]
        o = ends[i] - rows[i]
        for m in range(rows[i]):
            left[o] = n16[g, m, 0]
            right[o] = n16[g, m, 1]
            a = np.int64(u16[g, m, 2])
            b = np.int64(u16[g, m, 3])
            mass_l[o] = a & 0x1FFF
            mass_r[o] = b & 0x1FFF
            cut_dim[o] = (a >> 13) | ((b >> 13) << 3)
            cut_val[o] = f32[g, m, 2]
            for d in range(K):
                box_lo[o, d] = box[g, m, bo + d]
                box_hi[o, d] = box[g, m, bo + K + d]
            o += 1


@numba.njit(cache=True, nogil=True, parallel=True)
def scatter_records(
    trees, rows, K, bo, n16, u16, f32, box, left, right, mass_l, mass_r, cut_dim, cut_val, box_lo, box_hi
):
    """The inverse of :func:`gather_records`: write the field arrays into the packed records."""
    ends = np.cumsum(rows)
    for i in numba.prange(trees.shape[0]):
        g = trees[i]
        o = ends[i] - rows[i]
        for m in range(rows[i]):
            n16[g, m, 0] = left[o]
            n16[g, m, 1] = right[o]
            cd = np.int64(cut_dim[o])
            u16[g, m, 2] = np.int64(mass_l[o]) | ((cd & 7) << 13)
            u16[g, m, 3] = np.int64(mass_r[o]) | ((cd >> 3) << 13)
            f32[g, m, 2] = cut_val[o]
            for d in range(K):
                box[g, m, bo + d] = box_lo[o, d]
                box[g, m, bo + K + d] = box_hi[o, d]
            o += 1
