"""Property tests of the forest: tree invariants after any stream, and deletes undo inserts.

Small trees and few examples: each example compiles nothing new (the kernels are cached) and
checks every tree of every series in pure Python (``detector.forest.check_state``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from detector import kernels
from detector.config import ForestConfig
from detector.forest import Forest, check_state

configs = st.builds(
    ForestConfig,
    n_trees=st.integers(1, 3),
    sample_size=st.integers(4, 12),
    shingle_size=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    raw_score=st.just("codisp"),
    insert_every=st.just(1),
)
#: The default engine: the isolation score, trees taking turns at the points (classes).
iso_configs = st.integers(1, 4).flatmap(
    lambda every: st.builds(
        ForestConfig,
        n_trees=st.integers(every, 6),
        sample_size=st.integers(4, 12),
        shingle_size=st.integers(1, 3),
        seed=st.integers(0, 2**32),
        insert_every=st.just(every),
    )
)
# Few distinct values make duplicate points (shared leaves) common; floats make ties rare.
values = st.one_of(
    st.lists(st.sampled_from([0.0, 1.0, 2.0, -1.5]), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=60),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.one_of(configs, iso_configs),
    data=values,
    which=st.lists(st.integers(0, 1), min_size=60, max_size=60),
)
def test_every_tree_stays_valid_after_any_stream(
    config: ForestConfig, data: list[float], which: list[int]
) -> None:
    forest = Forest(config, capacity=1)
    slots = forest.add_series(2)
    rows = slots[np.array(which[: len(data)])]
    for chunk in np.array_split(np.arange(len(data)), 3):  # several batches, slots repeating
        forest.update(rows[chunk], np.array(data)[chunk])
    for slot in slots:
        state = forest.to_state(int(slot))
        check_state(state)  # boxes exact, masses add up, cuts separate, leaves = class's points
        live = min(int(state["n_points"]), config.store_size)
        assert int(state["count"].sum()) == live <= config.store_size


def _canonical(f: Forest, g: int) -> Any:
    """The tree as nested tuples of values (independent of node numbering and free lists)."""
    n16, u16, f32, box = f._v["n16"], f._v["u16"], f._v["f32"], f._v["box"]
    pts, cnt, k, bo = f._a["points"][0], f._a["count"][0], f._K, f._bo

    def walk(ref: int) -> Any:
        if ref == 0:
            return None
        if ref < 0:
            return ("leaf", -ref - 1, int(cnt[-ref - 1]))
        m = ref - 1
        lo = tuple(float(pts[box[g, m, bo + d], d]) for d in range(k))
        hi = tuple(float(pts[box[g, m, bo + k + d], d]) for d in range(k))
        return (
            int(kernels.node_cdim(u16, g, m)),
            float(f32[g, m, 2]),
            int(kernels.node_mass(u16, g, m, 0)),
            int(kernels.node_mass(u16, g, m, 1)),
            lo,
            hi,
            walk(int(n16[g, m, 0])),
            walk(int(n16[g, m, 1])),
        )

    return walk(int(f._a["root"][g]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs,
    data=st.lists(st.sampled_from([0.0, 1.0, 2.5, -3.0, 7.0]), min_size=1, max_size=30),
    new=st.lists(st.sampled_from([0.0, 1.0, 2.5, 4.0, -8.0]), min_size=3, max_size=3),
    depth_seed=st.integers(0, 99),
)
def test_deleting_a_point_undoes_inserting_it(
    config: ForestConfig, data: list[float], new: list[float], depth_seed: int
) -> None:
    """Run the plain-Python kernels (the source both compilers build) on a forest's arrays."""
    forest = Forest(config, capacity=1)
    slot = forest.add_series(1)
    n, k = config.sample_size, config.shingle_size
    data = data[: n - 1 + k - 1]  # leave the window a free slot
    forest.update(np.repeat(slot, len(data)), np.array(data))
    p = int(forest._a["n_points"][0])
    assume(p < n)
    a, v = forest._a, forest._v
    point = np.array(new[:k], dtype=np.float32)
    a["points"][0, p] = point
    live = [j for j in range(p) if np.array_equal(a["points"][0, j], point)]
    dup = bool(live)
    target = int(a["rep"][0, live[0]]) if dup else p
    path = np.empty(n, np.int16)
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # uint64 hashing wraps on purpose
        for t in range(config.n_trees):
            before = _canonical(forest, t)
            a["count"][0, target] += 1
            key = kernels.tree_key(np.uint64(config.seed), a["uid"][0], t)
            score = kernels.tree_insert(
                t,
                0,
                target,
                dup,
                key,
                p + depth_seed,
                k,
                forest._bo,
                v["n16"],
                v["u16"],
                v["f32"],
                v["box"],
                a["root"],
                a["free_head"],
                a["n_alloc"],
                a["points"],
                a["count"],
            )
            assert score >= 0.0
            assert _canonical(forest, t) != before
            a["count"][0, target] -= 1
            kernels.tree_delete(
                t,
                0,
                target,
                -1,
                not dup,
                k,
                forest._bo,
                v["n16"],
                v["u16"],
                v["f32"],
                v["box"],
                a["root"],
                a["free_head"],
                a["points"],
                path,
            )
            assert _canonical(forest, t) == before
