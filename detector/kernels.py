"""The forest's kernels, written once as plain Python and compiled twice (CPU and GPU).

Every function here uses only scalar arithmetic and array indexing, so that
``detector.kernels_cpu`` can compile it with ``numba.njit`` and ``detector.kernels_cuda`` with
``numba.cuda.jit(device=True)``. Calls between these functions go through module globals, which each
compiler rebinds to its own compiled version (see ``compile_namespace``).

Array layout (S series slots, T trees per series, G = S*T trees, M = N-1 internal nodes per tree,
N = sample_size point slots per series, K = shingle_size dimensions):

* ``pts[S, N, K]`` float32: the point store, the last N shingles of each series (offset-subtracted).
* ``rep[S, N]`` uint16: for each point slot, the slot of the leaf that holds its point (equal points
  share one leaf, as in rrcf); ``cnt[S, N]`` uint16: the number of points in the leaf at a rep slot.
* ``nodes[G, M, R]``: one packed record of R = align4(12 + 2*K*B) bytes per internal node (B = 1
  byte when N <= 256, else 2), read through four views of the same buffer so that a node visit
  touches one or two cache lines instead of one per field:

  ====================  ==========================================================================
  ``n16[g, m, 0|1]``    left / right child: ``ref > 0`` is internal node ``ref-1``, ``ref < 0`` the
                        leaf of point slot ``-ref-1``, ``0`` nothing (all-zero arrays are an empty
                        forest, so series are allocated lazily with ``zeros``)
  ``u16[g, m, 2|3]``    mass (points, duplicates counted) of the left / right subtree in the low
                        13 bits; the cut dimension in the top 3 bits of each (6 bits, K <= 64)
  ``f32[g, m, 2]``      the cut value: a point goes left when ``x[cut_dim] <= cut``
  ``box[g, m, bo+d]``   the bounding box, cached as the point SLOT holding the minimum (``bo+d``) /
                        maximum (``bo+K+d``) of each dimension, read through ``pts``: 2K bytes
                        instead of 8K (``bo`` = 12 / B)
  ====================  ==========================================================================
* ``root[G]``, ``nfree[G]`` (free-list head + 1, threaded through the left child), ``nalloc[G]`` int16.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
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
_MASS_BITS = 0x1FFF
#: The expected value is the median of this many trees' imputations (spread evenly over the forest):
#: it is a side output, and imputing in all trees would cost a fifth of the step.
EXPECTED_VALUE_TREES = 10

#: Names of the functions compiled as device functions, in no particular order.
DEVICE_FUNCTIONS = (
    "mix64",
    "tree_key",
    "uniform",
    "node_mass",
    "node_cdim",
    "subtree_mass",
    "alloc_node",
    "free_node",
    "link",
    "tree_insert",
    "tree_delete",
    "tree_expect",
    "tree_expect_new",
    "tree_score",
    "leaf_score",
    "series_shingle",
    "series_plan_delete",
    "series_place",
    "series_place_class",
    "slot_class",
)

# ----------------------------------------------------------------------------------------------
# Random numbers: counter-based (splitmix64 finalizer), so a draw depends only on
# (seed, series uid, tree, point counter, depth) -- the same on CPU and GPU, whatever the threads.


def mix64(z):
    z = (z ^ (z >> _SH30)) * _M1
    z = (z ^ (z >> _SH27)) * _M2
    return z ^ (z >> _SH31)


def tree_key(seed, uid, tree):
    return mix64(mix64(np.uint64(seed) ^ mix64(np.uint64(uid) + _GOLDEN)) + np.uint64(tree) * _GOLDEN)


def uniform(key, point, depth):
    z = mix64(key ^ (np.uint64(point) * _M2 + np.uint64(depth) * _GOLDEN))
    return np.float64(z >> _SH11) * _INV53


# ----------------------------------------------------------------------------------------------
# One tree. A node is one packed record (see the module docstring); these read and write it.


def node_mass(u16, g, m, side):
    return np.int64(u16[g, m, 2 + side]) & _MASS_BITS


def node_cdim(u16, g, m):
    return (np.int64(u16[g, m, 2]) >> 13) | ((np.int64(u16[g, m, 3]) >> 13) << 3)


def subtree_mass(g, si, ref, u16, cnt):
    if ref > 0:
        return node_mass(u16, g, ref - 1, 0) + node_mass(u16, g, ref - 1, 1)
    return np.int64(cnt[si, -ref - 1])


def alloc_node(g, n16, nfree, nalloc):
    h = np.int64(nfree[g])
    if h > 0:
        n = h - 1
        nfree[g] = n16[g, n, 0]
        return n
    n = np.int64(nalloc[g])
    nalloc[g] = n + 1
    return n


def free_node(g, n, n16, nfree):
    n16[g, n, 0] = nfree[g]
    nfree[g] = n + 1


def link(g, parent, side, ref, n16, root):
    if parent < 0:
        root[g] = ref
    else:
        n16[g, parent, side] = ref


def tree_insert(
    g,
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
):
    """Insert point slot ``s`` into tree ``g`` and return its CoDisp (rrcf's definition).

    ``dup``: the point equals the point of leaf ``s`` already in the tree (its count was raised by
    the caller); the walk only adds mass on the way down. Otherwise a new leaf is made where the
    random cut of rrcf's ``insert_point`` first separates the point from a node's box. The
    collusive displacement, max over ancestors of mass(sibling)/mass(node), is gathered on the way
    down (each node holds its children's masses), so no parent pointers or path are needed.
    """
    ref = np.int64(root[g])
    if ref == 0:
        root[g] = -(s + 1)
        return 0.0
    parent = np.int64(-1)
    pside = np.int64(0)
    best = 0.0
    depth = 0
    while True:
        if ref < 0 and dup:
            return best
        outside = False
        m = np.int64(-1)
        if not dup:
            # Span of the node's box joined with the point (rrcf's bbox_hat). A point inside the
            # box cannot be cut off there (rrcf's cut lands in the box and it descends), so the
            # draw is made only where the point sticks out; draws are indexed by depth, so a
            # skipped draw changes no other.
            if ref > 0:
                m = ref - 1
            total = 0.0
            for d in range(K):
                x = np.float64(pts[si, s, d])
                if m >= 0:
                    a = np.float64(pts[si, box[g, m, bo + d], d])
                    b = np.float64(pts[si, box[g, m, bo + K + d], d])
                else:
                    a = np.float64(pts[si, -ref - 1, d])
                    b = a
                # Branch-free (a mispredicted branch per dimension cost more than the selects):
                # the span of [a, b] joined with x.
                total += max(b, x) - min(a, x)
                outside |= (x < a) | (x > b)
        if outside:
            r = uniform(key, point, depth) * total
            acc = 0.0
            j = np.int64(-1)
            cut = 0.0
            for d in range(K):
                x = np.float64(pts[si, s, d])
                if m >= 0:
                    a = np.float64(pts[si, box[g, m, bo + d], d])
                    b = np.float64(pts[si, box[g, m, bo + K + d], d])
                else:
                    a = np.float64(pts[si, -ref - 1, d])
                    b = a
                if x < a:
                    lo_u = x
                    span = b - x
                elif x > b:
                    lo_u = a
                    span = x - a
                else:
                    lo_u = a
                    span = b - a
                if span > 0.0:
                    acc += span
                    j = d
                    cut = lo_u + acc - r
                    if acc >= r:
                        break
            x32 = pts[si, s, j]
            if m >= 0:
                a32 = pts[si, box[g, m, bo + j], j]
                b32 = pts[si, box[g, m, bo + K + j], j]
            else:
                a32 = pts[si, -ref - 1, j]
                b32 = a32
            sep = 0
            c32 = np.float32(cut)
            if x32 < a32 and (m < 0 or cut < a32):
                sep = 1  # the new leaf goes left of the node
                if c32 >= a32 or c32 < x32:
                    c32 = x32
            elif x32 > b32 and (m < 0 or cut >= b32):
                sep = 2
                if c32 >= x32 or c32 < b32:
                    c32 = b32
            if sep > 0:
                n = alloc_node(g, n16, nfree, nalloc)
                mref = subtree_mass(g, si, ref, u16, cnt)
                f32[g, n, 2] = c32
                if sep == 1:
                    n16[g, n, 0] = -(s + 1)
                    n16[g, n, 1] = ref
                    u16[g, n, 2] = 1 | ((j & 7) << 13)
                    u16[g, n, 3] = mref | ((j >> 3) << 13)
                else:
                    n16[g, n, 0] = ref
                    n16[g, n, 1] = -(s + 1)
                    u16[g, n, 2] = mref | ((j & 7) << 13)
                    u16[g, n, 3] = 1 | ((j >> 3) << 13)
                for d in range(K):
                    if m >= 0:
                        la = np.int64(box[g, m, bo + d])
                        hb = np.int64(box[g, m, bo + K + d])
                    else:
                        la = -ref - 1
                        hb = la
                    xd = pts[si, s, d]
                    if xd < pts[si, la, d]:
                        box[g, n, bo + d] = s
                    else:
                        box[g, n, bo + d] = la
                    if xd > pts[si, hb, d]:
                        box[g, n, bo + K + d] = s
                    else:
                        box[g, n, bo + K + d] = hb
                link(g, parent, pside, n + 1, n16, root)
                if mref > best:
                    best = np.float64(mref)
                return best
        # The point stays inside this node's subtree: follow the node's own cut.
        m = ref - 1
        if pts[si, s, node_cdim(u16, g, m)] <= f32[g, m, 2]:
            side = np.int64(0)
        else:
            side = np.int64(1)
        msib = np.float64(node_mass(u16, g, m, 1 - side))
        mnode = np.float64(node_mass(u16, g, m, side) + 1)
        if msib > best * mnode:
            best = msib / mnode
        u16[g, m, 2 + side] = u16[g, m, 2 + side] + 1
        if outside:
            for d in range(K):
                xd = pts[si, s, d]
                if xd < pts[si, box[g, m, bo + d], d]:
                    box[g, m, bo + d] = s
                if xd > pts[si, box[g, m, bo + K + d], d]:
                    box[g, m, bo + K + d] = s
        parent = m
        pside = side
        ref = np.int64(n16[g, m, side])
        depth += 1


def tree_delete(
    g,
    si,
    r,
    newrep,
    full,
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
):
    """Remove one point of leaf ``r`` from tree ``g``.

    ``full``: the leaf goes (its count was 1): its parent is spliced out and freed, and the boxes
    of the ancestors that referenced ``r`` are rebuilt bottom-up from their children (``path``
    holds the root-to-leaf walk; N entries suffice). Otherwise only the masses drop, and when
    ``newrep >= 0`` the leaf is renamed to that slot (its point leaves the store while equal
    points stay).
    """
    ref = np.int64(root[g])
    parent = np.int64(-1)
    pside = np.int64(0)
    gparent = np.int64(-1)
    gpside = np.int64(0)
    depth = 0
    while ref > 0:
        m = ref - 1
        if pts[si, r, node_cdim(u16, g, m)] <= f32[g, m, 2]:
            side = np.int64(0)
        else:
            side = np.int64(1)
        u16[g, m, 2 + side] = u16[g, m, 2 + side] - 1
        if full:
            path[depth] = m
        elif newrep >= 0:
            for d in range(K):
                if box[g, m, bo + d] == r:
                    box[g, m, bo + d] = newrep
                if box[g, m, bo + K + d] == r:
                    box[g, m, bo + K + d] = newrep
        depth += 1
        gparent = parent
        gpside = pside
        parent = m
        pside = side
        ref = np.int64(n16[g, m, side])
    if not full:
        if newrep >= 0:
            link(g, parent, pside, -(newrep + 1), n16, root)
        return
    if parent < 0:
        root[g] = 0
        return
    sib = n16[g, parent, 1 - pside]
    link(g, gparent, gpside, sib, n16, root)
    free_node(g, parent, n16, nfree)
    for i in range(depth - 2, -1, -1):
        a = np.int64(path[i])
        cl = np.int64(n16[g, a, 0])
        cr = np.int64(n16[g, a, 1])
        for e in range(2 * K):
            if box[g, a, bo + e] == r:
                d = e % K
                if cl > 0:
                    sl = np.int64(box[g, cl - 1, bo + e])
                else:
                    sl = -cl - 1
                if cr > 0:
                    sr = np.int64(box[g, cr - 1, bo + e])
                else:
                    sr = -cr - 1
                if (e < K) == (pts[si, sl, d] <= pts[si, sr, d]):
                    box[g, a, bo + e] = sl
                else:
                    box[g, a, bo + e] = sr


def tree_expect(g, si, s, K, n16, u16, f32, pts, root):
    """Tree ``g``'s imputation of the newest coordinate of point slot ``s`` (not yet inserted).

    Walks down following the point's first K-1 coordinates; at a cut on the newest coordinate
    (unknown) it takes the heavier child, the likelier side. Returns the leaf's newest coordinate.
    """
    ref = np.int64(root[g])
    if ref == 0:
        return np.float64(pts[si, s, K - 1])
    while ref > 0:
        m = ref - 1
        cd = node_cdim(u16, g, m)
        if cd == K - 1:
            if node_mass(u16, g, m, 0) >= node_mass(u16, g, m, 1):
                ref = np.int64(n16[g, m, 0])
            else:
                ref = np.int64(n16[g, m, 1])
        elif pts[si, s, cd] <= f32[g, m, 2]:
            ref = np.int64(n16[g, m, 0])
        else:
            ref = np.int64(n16[g, m, 1])
    return np.float64(pts[si, -ref - 1, K - 1])


def tree_expect_new(g, si, K, n16, u16, f32, pts, root, newpt):
    """``tree_expect`` for the new shingle ``newpt[si]``, which is not in the point store."""
    ref = np.int64(root[g])
    if ref == 0:
        return np.float64(newpt[si, K - 1])
    while ref > 0:
        m = ref - 1
        cd = node_cdim(u16, g, m)
        if cd == K - 1:
            if node_mass(u16, g, m, 0) >= node_mass(u16, g, m, 1):
                ref = np.int64(n16[g, m, 0])
            else:
                ref = np.int64(n16[g, m, 1])
        elif newpt[si, cd] <= f32[g, m, 2]:
            ref = np.int64(n16[g, m, 0])
        else:
            ref = np.int64(n16[g, m, 1])
    return np.float64(pts[si, -ref - 1, K - 1])


def tree_score(g, si, K, bo, n16, u16, f32, box, root, pts, cnt, newpt, lg):
    """The isolation score of the new shingle ``newpt[si]`` in tree ``g``, which does not hold it.

    AWS RCF's anomaly score (``AnomalyScoreVisitor``): walk down following the cuts; at a node at
    depth ``d`` whose box the point lies outside of, it would be cut off with the probability
    ``p = (span(box + point) - span(box)) / span(box + point)``, isolated at depth ``d`` (score
    ``1 / (d + 1)``); at the leaf, an unseen point scores ``1 / (depth + 1)``, a point equal to
    the leaf's ``damp / (depth + log2(mass + 1))`` with ``damp = 1 - mass / (2 * tree mass)``.
    The expectation over the path, times ``log2(tree mass + 1)``: about 1 for a typical point,
    up to ``log2(N + 1)`` for one cut off at the root. Deterministic (no random draw), so it
    varies less from tree to tree than CoDisp, which depends on where the insert's cut falls.
    ``lg[i]`` is ``log2(i)`` (``kernels_cpu.log2_table``: masses are integers, and a table read gives the
    CPU and the GPU the same bits, where their ``log2`` functions may differ in the last one).
    """
    ref = np.int64(root[g])
    if ref == 0:
        return 0.0
    tmass = np.float64(subtree_mass(g, si, ref, u16, cnt))
    acc = 0.0
    q = 1.0
    depth = 0
    while ref > 0:
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
            acc += q * p / (depth + 1.0)
            q *= 1.0 - p
        if newpt[si, node_cdim(u16, g, m)] <= f32[g, m, 2]:
            ref = np.int64(n16[g, m, 0])
        else:
            ref = np.int64(n16[g, m, 1])
        depth += 1
    return leaf_score(si, K, ref, depth, acc, q, tmass, pts, cnt, newpt, lg)


def leaf_score(si, K, ref, depth, acc, q, tmass, pts, cnt, newpt, lg):
    """The end of ``tree_score``'s walk at leaf ``ref`` (depth ``depth``): the leaf's term, then
    the whole expectation ``acc + q * leaf`` scaled by ``log2(tree mass + 1)``."""
    leaf = -ref - 1
    same = True
    for d in range(K):
        if pts[si, leaf, d] != newpt[si, d]:
            same = False
    if same:
        c = np.int64(cnt[si, leaf])
        lm = np.float64(c)
        acc += q * (1.0 - lm / (2.0 * tmass)) / (depth + lg[c + 1])
    else:
        acc += q / (depth + 1.0)
    return acc * lg[np.int64(tmass) + 1]


# ----------------------------------------------------------------------------------------------
# One series (run once per point, before / between the tree passes)


def series_shingle(si, value, K, tail, nvals, offset, newpt):
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


def series_plan_delete(si, N, npts, rep, cnt, plan):
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


def series_place(si, N, K, T, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root):
    """``series_place_class`` for the sliding window: one class, every tree holds every point."""
    series_place_class(si, N, K, T, 0, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root)


def series_place_class(si, W, K, T, c, npts, rep, cnt, pts, newpt, plan, n16, u16, f32, root):
    """Store the new point in the oldest of the ``W`` slots; find an equal live point (a duplicate).

    Equal points always fall in the same leaf, so the search walks tree ``c`` (the first tree of
    the point's class, which holds every live point of that class) following the cuts with the
    new point (after the leaving point was deleted): O(depth), not a scan of the store. Writes
    ``plan[si, 3]`` = the leaf slot to insert into the trees and ``plan[si, 4]`` = 1 when it is a
    duplicate of that leaf; advances the point counter.
    """
    p = npts[si]
    slot = p % W
    for d in range(K):
        pts[si, slot, d] = newpt[si, d]
    g = si * T + c
    ref = np.int64(root[g])
    while ref > 0:
        m = ref - 1
        if newpt[si, node_cdim(u16, g, m)] <= f32[g, m, 2]:
            ref = np.int64(n16[g, m, 0])
        else:
            ref = np.int64(n16[g, m, 1])
    found = np.int64(-1)
    if ref < 0:
        leaf = -ref - 1
        same = True
        for d in range(K):
            if pts[si, leaf, d] != newpt[si, d]:
                same = False
        if same:
            found = leaf
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


def slot_class(slot, every):
    """The class of trees that holds the point in store slot ``slot`` (0 .. every-1).

    Slots come in blocks of ``every``; each block gives one point to each class, in an order
    rotated by a hash of the block: every class holds exactly ``sample_size`` of the store's
    points, and a class does not see only one phase of a pattern whose period shares a factor
    with ``every`` (``i % every`` would: with a period of 20 and every 4, five phases each).
    A point leaves the store from its own slot, so it leaves its own class.
    """
    b = slot // every
    r = np.int64(mix64(np.uint64(b) + _GOLDEN) % np.uint64(every))
    return (slot - b * every + r) % every


def record_layout(K: int, N: int) -> tuple[int, Any, int]:
    """(bytes per node record, box slot dtype, box offset in box units) for shingle K, window N."""
    box_dtype = np.uint8 if N <= 256 else np.uint16
    b = np.dtype(box_dtype).itemsize
    size = 12 + 2 * K * b
    return (size + 3) // 4 * 4, box_dtype, 12 // b


def expect_stride(T: int) -> int:
    """Every how many trees the expected value is imputed (about 10 trees; see tree_expect)."""
    return max(1, T // EXPECTED_VALUE_TREES)


def compile_namespace(jit: Callable[[Callable[..., Any]], Any]) -> dict[str, Any]:
    """Compile every device function with ``jit`` in a private copy of this module's globals."""
    return compile_functions(globals(), DEVICE_FUNCTIONS, jit)


def compile_functions(
    module_globals: dict[str, Any], names: Sequence[str], jit: Callable[[Callable[..., Any]], Any]
) -> dict[str, Any]:
    """Compile the functions ``names`` of a module with ``jit`` in a private copy of its globals.

    Calls between the functions resolve (at compile time) through that copy, so the CPU and the
    GPU builds each call their own compiled versions of the same source (the forest's kernels
    here, the scoring stage's in detector/scoring_kernels.py).
    """
    namespace: dict[str, Any] = dict(module_globals)
    for name in names:
        f = module_globals[name]
        copy = types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__, f.__closure__)
        copy.__qualname__ = f.__qualname__
        copy.__module__ = f.__module__
        namespace[name] = jit(copy)
    return namespace
