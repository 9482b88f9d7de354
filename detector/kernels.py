"""The forest's kernels, written once as plain Python and compiled twice (CPU and GPU).

Every function here uses only scalar arithmetic and array indexing, so that
``detector.kernels_cpu`` can compile it with ``numba.njit`` and ``detector.kernels_cuda`` with
``numba.cuda.jit(device=True)``. Calls between these functions go through module globals, which each
compiler rebinds to its own compiled version (see ``compile_namespace``).

Array layout (S series slots, T trees per series, G = S*T trees, M = N-1 internal nodes per tree,
N = sample_size point slots per series, K = shingle_size dimensions):

* ``pts[S, N, K]`` float32: the point store, the last N shingles of each series (offset-subtracted).
* ``rep[S, N]`` uint16: for each point slot, the slot of the leaf that holds its point (duplicates
  share one leaf, as in rrcf); ``cnt[S, N]`` uint16: the number of points in the leaf at a rep slot.
* ``left/right[G, M]`` int16 child references: ``ref > 0`` is internal node ``ref-1``, ``ref < 0`` is
  the leaf of point slot ``-ref-1``, ``0`` is nothing. All-zero arrays are an empty forest, so a
  million series can be allocated lazily (``zeros``) without touching a byte.
* ``cdim[G, M]`` uint8, ``cval[G, M]`` float32: the cut (a point goes left when ``x[cdim] <= cval``).
* ``mass[G, M]`` uint16: points below the node (duplicates counted).
* ``lo/hi[G, M, K]`` uint8 (N <= 256) or uint16: the bounding box, cached as the point SLOT that
  holds the minimum / maximum in each dimension (read through ``pts``): 2K bytes instead of 8K.
* ``root[G]``, ``nfree[G]`` (free-list head + 1, threaded through ``left``), ``nalloc[G]`` int16.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SH30 = np.uint64(30)
_SH27 = np.uint64(27)
_SH31 = np.uint64(31)
_SH11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0

#: Names of the functions compiled as device functions, in no particular order.
DEVICE_FUNCTIONS = (
    "mix64", "tree_key", "uniform", "ref_mass", "alloc_node", "free_node", "link",
    "tree_insert", "tree_delete", "tree_expect", "series_shingle", "series_plan_delete",
    "series_place",
)

# ----------------------------------------------------------------------------------------------
# Random numbers: counter-based (splitmix64 finalizer), so a draw depends only on
# (seed, series uid, tree, point counter, depth) -- the same on CPU and GPU, whatever the threads.


def mix64(z):  # type: ignore[no-untyped-def]
    z = (z ^ (z >> _SH30)) * _M1
    z = (z ^ (z >> _SH27)) * _M2
    return z ^ (z >> _SH31)


def tree_key(seed, uid, tree):  # type: ignore[no-untyped-def]
    return mix64(mix64(np.uint64(seed) ^ mix64(np.uint64(uid) + _GOLDEN)) + np.uint64(tree) * _GOLDEN)


def uniform(key, point, depth):  # type: ignore[no-untyped-def]
    z = mix64(key ^ (np.uint64(point) * _M2 + np.uint64(depth) * _GOLDEN))
    return np.float64(z >> _SH11) * _INV53


# ----------------------------------------------------------------------------------------------
# One tree


def ref_mass(g, si, ref, mass, cnt):  # type: ignore[no-untyped-def]
    if ref > 0:
        return np.int64(mass[g, ref - 1])
    return np.int64(cnt[si, -ref - 1])


def alloc_node(g, left, nfree, nalloc):  # type: ignore[no-untyped-def]
    h = np.int64(nfree[g])
    if h > 0:
        n = h - 1
        nfree[g] = left[g, n]
        return n
    n = np.int64(nalloc[g])
    nalloc[g] = n + 1
    return n


def free_node(g, n, left, nfree):  # type: ignore[no-untyped-def]
    left[g, n] = nfree[g]
    nfree[g] = n + 1


def link(g, parent, side, ref, left, right, root):  # type: ignore[no-untyped-def]
    if parent < 0:
        root[g] = ref
    elif side == 0:
        left[g, parent] = ref
    else:
        right[g, parent] = ref


def tree_insert(g, si, s, dup, key, point, K, left, right, cdim, cval, mass, lo, hi,  # type: ignore[no-untyped-def]
                root, nfree, nalloc, pts, cnt):
    """Insert point slot ``s`` into tree ``g`` and return its CoDisp (rrcf's definition).

    ``dup``: the point equals the point of leaf ``s`` already in the tree (its count was raised by
    the caller); the walk only adds mass on the way down. Otherwise a new leaf is made where the
    random cut of rrcf's ``insert_point`` first separates the point from a node's box. The
    collusive displacement max over ancestors of mass(sibling)/mass(node) is gathered on the way
    down, so no parent pointers or path are needed.
    """
    ref = np.int64(root[g])
    if ref == 0:
        root[g] = -(s + 1)
        return 0.0
    parent = np.int64(-1)
    pside = 0
    best = 0.0
    depth = 0
    while True:
        if ref < 0 and dup:
            return best
        if not dup:
            # Span of the node's box joined with the point (rrcf's bbox_hat), then one uniform cut.
            if ref > 0:
                m = ref - 1
            else:
                m = -1
            total = 0.0
            for d in range(K):
                x = np.float64(pts[si, s, d])
                if m >= 0:
                    a = np.float64(pts[si, lo[g, m, d], d])
                    b = np.float64(pts[si, hi[g, m, d], d])
                else:
                    a = np.float64(pts[si, -ref - 1, d])
                    b = a
                total += max(b, x) - min(a, x)
            r = uniform(key, point, depth) * total
            acc = 0.0
            j = -1
            cut = 0.0
            for d in range(K):
                x = np.float64(pts[si, s, d])
                if m >= 0:
                    a = np.float64(pts[si, lo[g, m, d], d])
                    b = np.float64(pts[si, hi[g, m, d], d])
                else:
                    a = np.float64(pts[si, -ref - 1, d])
                    b = a
                lo_u = min(a, x)
                span = max(b, x) - lo_u
                if span > 0.0:
                    acc += span
                    j = d
                    cut = lo_u + acc - r
                    if acc >= r:
                        break
            x = pts[si, s, j]
            if m >= 0:
                a32 = pts[si, lo[g, m, j], j]
                b32 = pts[si, hi[g, m, j], j]
            else:
                a32 = pts[si, -ref - 1, j]
                b32 = a32
            sep = 0
            c32 = np.float32(cut)
            if x < a32 and (m < 0 or cut < a32):
                sep = 1  # the new leaf goes left of the node
                if c32 >= a32 or c32 < x:
                    c32 = x
            elif x > b32 and (m < 0 or cut >= b32):
                sep = 2
                if c32 >= x or c32 < b32:
                    c32 = b32
            if sep > 0:
                n = alloc_node(g, left, nfree, nalloc)
                cdim[g, n] = j
                cval[g, n] = c32
                if sep == 1:
                    left[g, n] = -(s + 1)
                    right[g, n] = ref
                else:
                    left[g, n] = ref
                    right[g, n] = -(s + 1)
                mref = ref_mass(g, si, ref, mass, cnt)
                mass[g, n] = mref + 1
                for d in range(K):
                    if m >= 0:
                        la = np.int64(lo[g, m, d])
                        hb = np.int64(hi[g, m, d])
                    else:
                        la = -ref - 1
                        hb = la
                    xd = pts[si, s, d]
                    if xd < pts[si, la, d]:
                        lo[g, n, d] = s
                    else:
                        lo[g, n, d] = la
                    if xd > pts[si, hb, d]:
                        hi[g, n, d] = s
                    else:
                        hi[g, n, d] = hb
                link(g, parent, pside, n + 1, left, right, root)
                return max(best, np.float64(mref))
        # The cut fell inside the node's box: follow the node's own cut.
        m = ref - 1
        if pts[si, s, cdim[g, m]] <= cval[g, m]:
            child = np.int64(left[g, m])
            sib = np.int64(right[g, m])
            side = 0
        else:
            child = np.int64(right[g, m])
            sib = np.int64(left[g, m])
            side = 1
        if dup and child < 0:
            mchild = np.int64(cnt[si, -child - 1])  # already raised by the caller
        else:
            mchild = ref_mass(g, si, child, mass, cnt) + 1
        ratio = np.float64(ref_mass(g, si, sib, mass, cnt)) / np.float64(mchild)
        if ratio > best:
            best = ratio
        mass[g, m] = mass[g, m] + 1
        if not dup:
            for d in range(K):
                xd = pts[si, s, d]
                if xd < pts[si, lo[g, m, d], d]:
                    lo[g, m, d] = s
                if xd > pts[si, hi[g, m, d], d]:
                    hi[g, m, d] = s
        parent = m
        pside = side
        ref = child
        depth += 1


def tree_delete(g, si, r, newrep, full, K, left, right, cdim, cval, mass, lo, hi,  # type: ignore[no-untyped-def]
                root, nfree, pts, path):
    """Remove one point of leaf ``r`` from tree ``g``.

    ``full``: the leaf goes (its count was 1): its parent is spliced out and freed, and the boxes
    of the ancestors that referenced ``r`` are rebuilt bottom-up from their children (``path``
    holds the root-to-leaf walk; it needs N entries in the worst case). Otherwise only the masses
    drop, and when ``newrep >= 0`` the leaf is renamed to that slot (its point is leaving the
    store while duplicates stay).
    """
    ref = np.int64(root[g])
    parent = np.int64(-1)
    pside = 0
    gparent = np.int64(-1)
    gpside = 0
    depth = 0
    while ref > 0:
        m = ref - 1
        if full:
            path[depth] = m
        else:
            mass[g, m] = mass[g, m] - 1
            if newrep >= 0:
                for d in range(K):
                    if lo[g, m, d] == r:
                        lo[g, m, d] = newrep
                    if hi[g, m, d] == r:
                        hi[g, m, d] = newrep
        depth += 1
        gparent = parent
        gpside = pside
        parent = m
        if pts[si, r, cdim[g, m]] <= cval[g, m]:
            ref = np.int64(left[g, m])
            pside = 0
        else:
            ref = np.int64(right[g, m])
            pside = 1
    if not full:
        if newrep >= 0:
            link(g, parent, pside, -(newrep + 1), left, right, root)
        return
    if parent < 0:
        root[g] = 0
        return
    if pside == 0:
        sib = right[g, parent]
    else:
        sib = left[g, parent]
    link(g, gparent, gpside, sib, left, right, root)
    free_node(g, parent, left, nfree)
    for i in range(depth - 2, -1, -1):
        a = np.int64(path[i])
        mass[g, a] = mass[g, a] - 1
        cl = np.int64(left[g, a])
        cr = np.int64(right[g, a])
        for d in range(K):
            if lo[g, a, d] == r:
                if cl > 0:
                    sl = np.int64(lo[g, cl - 1, d])
                else:
                    sl = -cl - 1
                if cr > 0:
                    sr = np.int64(lo[g, cr - 1, d])
                else:
                    sr = -cr - 1
                if pts[si, sl, d] <= pts[si, sr, d]:
                    lo[g, a, d] = sl
                else:
                    lo[g, a, d] = sr
            if hi[g, a, d] == r:
                if cl > 0:
                    sl = np.int64(hi[g, cl - 1, d])
                else:
                    sl = -cl - 1
                if cr > 0:
                    sr = np.int64(hi[g, cr - 1, d])
                else:
                    sr = -cr - 1
                if pts[si, sl, d] >= pts[si, sr, d]:
                    hi[g, a, d] = sl
                else:
                    hi[g, a, d] = sr


def tree_expect(g, si, s, K, left, right, cdim, cval, mass, pts, cnt, root):  # type: ignore[no-untyped-def]
    """Tree ``g``'s imputation of the newest coordinate of point slot ``s`` (not yet inserted).

    Walks down following the point's first K-1 coordinates; at a cut on the newest coordinate
    (unknown) it takes the heavier child, the likelier side. Returns the leaf's newest coordinate.
    """
    ref = np.int64(root[g])
    if ref == 0:
        return np.float64(pts[si, s, K - 1])
    while ref > 0:
        m = ref - 1
        dd = cdim[g, m]
        if dd == K - 1:
            cl = np.int64(left[g, m])
            cr = np.int64(right[g, m])
            if ref_mass(g, si, cl, mass, cnt) >= ref_mass(g, si, cr, mass, cnt):
                ref = cl
            else:
                ref = cr
        elif pts[si, s, dd] <= cval[g, m]:
            ref = np.int64(left[g, m])
        else:
            ref = np.int64(right[g, m])
    return np.float64(pts[si, -ref - 1, K - 1])


# ----------------------------------------------------------------------------------------------
# One series (run once per point, before / between the tree passes)


def series_shingle(si, value, K, tail, nvals, offset, newpt):  # type: ignore[no-untyped-def]
    """Push a raw value; write the new shingle to ``newpt[si]``; True once the shingle is full.

    Coordinates are stored relative to the series' first value (``offset``): RCF is translation
    invariant, and this keeps float32 precise for large values (e.g. 1e12 + small changes).
    """
    nv = nvals[si]
    if nv == 0:
        offset[si] = value
    v = value - offset[si]
    for d in range(K - 1):
        newpt[si, d] = np.float32(tail[si, d])
    newpt[si, K - 1] = np.float32(v)
    for d in range(K - 2):
        tail[si, d] = tail[si, d + 1]
    if K > 1:
        tail[si, K - 2] = v
    nvals[si] = nv + 1
    return nv + 1 >= K


def series_plan_delete(si, N, npts, rep, cnt, plan):  # type: ignore[no-untyped-def]
    """Decide how the oldest point leaves the window; write (leaf, new rep, full) to ``plan[si]``.

    ``plan[si, 0] = -1`` when the window is not full yet (nothing leaves).
    """
    p = npts[si]
    if p < N:
        plan[si, 0] = -1
        return
    slot = p % N
    r = np.int64(rep[si, slot])
    c = np.int64(cnt[si, r])
    if c > 1:
        if r == slot:
            r2 = np.int64(-1)
            for j in range(N):
                if j != slot and rep[si, j] == slot:
                    if r2 < 0:
                        r2 = j
                    rep[si, j] = r2
            cnt[si, r2] = c - 1
            cnt[si, slot] = 0
            plan[si, 0] = slot
            plan[si, 1] = r2
        else:
            cnt[si, r] = c - 1
            plan[si, 0] = r
            plan[si, 1] = -1
        plan[si, 2] = 0
    else:
        cnt[si, slot] = 0
        plan[si, 0] = slot
        plan[si, 1] = -1
        plan[si, 2] = 1


def series_place(si, N, K, npts, rep, cnt, pts, newpt, plan):  # type: ignore[no-untyped-def]
    """Store the new point in the oldest slot; find an equal live point (a duplicate).

    Writes ``plan[si, 3]`` = the leaf slot to insert into the trees and ``plan[si, 4]`` = 1 when
    it is a duplicate of that leaf; advances the point counter.
    """
    p = npts[si]
    slot = p % N
    for d in range(K):
        pts[si, slot, d] = newpt[si, d]
    live = p
    if live > N:
        live = N
    found = np.int64(-1)
    for j in range(live):
        if j != slot:
            same = True
            for d in range(K):
                if pts[si, j, d] != newpt[si, d]:
                    same = False
                    break
            if same:
                found = np.int64(rep[si, j])
                break
    if found >= 0:
        rep[si, slot] = found
        cnt[si, found] = cnt[si, found] + 1
        plan[si, 3] = found
        plan[si, 4] = 1
    else:
        rep[si, slot] = slot
        cnt[si, slot] = 1
        plan[si, 3] = slot
        plan[si, 4] = 0
    npts[si] = p + 1


def compile_namespace(jit: Callable[[Callable[..., Any]], Any]) -> dict[str, Any]:
    """Compile every device function with ``jit`` in a private copy of this module's globals.

    Calls between the functions resolve (at compile time) through that copy, so the CPU and the
    GPU builds each call their own compiled versions of the same source.
    """
    namespace: dict[str, Any] = dict(globals())
    for name in DEVICE_FUNCTIONS:
        f = globals()[name]
        copy = types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__, f.__closure__)
        copy.__qualname__ = f.__qualname__
        copy.__module__ = f.__module__
        namespace[name] = jit(copy)
    return namespace
