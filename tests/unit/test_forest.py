"""detector.forest: the batch API, its edge cases and its determinism."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from detector.backend import get_backend
from detector.config import ForestConfig
from detector.errors import BackendUnavailable, DetectorError
from detector.forest import Forest, check_state

#: rrcf's sliding window with CoDisp (``raw_score="codisp"``) and the default engine (the
#: isolation score, each tree taking every ``insert_every``-th point); most properties hold for both.
SMALL = ForestConfig(n_trees=4, sample_size=16, shingle_size=3, seed=11, raw_score="codisp", insert_every=1)
SMALL_ISO = ForestConfig(n_trees=4, sample_size=16, shingle_size=3, seed=11, insert_every=2)
BOTH = pytest.mark.parametrize("config", [SMALL, SMALL_ISO], ids=["codisp", "isolation"])


def _seasonal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 5 * np.sin(np.arange(n) * 2 * np.pi / 12) + rng.normal(0, 0.3, n)


def test_scores_are_zero_and_expected_is_the_value_until_the_shingle_is_full() -> None:
    """CoDisp: a point alone scores 0, two points 1 (either is the other's sibling)."""
    forest = Forest(SMALL, capacity=2)
    slot = forest.add_series(1)
    values = np.array([3.0, -1.0, 4.0, 1.5, 9.0])
    out = forest.update(np.repeat(slot, 5), values)
    assert out.raw_score[:2].tolist() == [0.0, 0.0]
    assert out.expected[:2].tolist() == [3.0, -1.0]
    assert out.raw_score[2] == 0.0  # first full shingle: alone in every tree
    assert out.raw_score[3] == 1.0  # two points: CoDisp 1 whatever the cut
    assert out.raw_score[4] > 0.0
    assert forest.n_points(slot).tolist() == [5]


@BOTH
def test_a_repeated_slot_is_the_same_as_its_values_one_call_at_a_time(config: ForestConfig) -> None:
    values = np.stack([_seasonal(60, 1), _seasonal(60, 2) * 100 + 7])
    batched = Forest(config, capacity=2)
    slots = batched.add_series(2)
    rows = np.array([slots[i % 2] for i in range(120)])
    vals = np.array([values[i % 2, i // 2] for i in range(120)])
    out = batched.update(rows, vals)
    single = Forest(config, capacity=2)
    slots2 = single.add_series(2)
    for i in range(120):
        o = single.update(slots2[i % 2 : i % 2 + 1], vals[i : i + 1])
        assert o.raw_score[0] == out.raw_score[i]
        assert o.expected[0] == out.expected[i]


@BOTH
def test_a_seeded_run_repeats_to_the_bit_and_another_seed_differs(config: ForestConfig) -> None:
    def run(seed: int) -> np.ndarray:
        forest = Forest(config.model_copy(update={"seed": seed}), capacity=1)
        slot = forest.add_series(1)
        return forest.update(np.repeat(slot, 80), _seasonal(80)).raw_score

    assert np.array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


@BOTH
def test_a_series_scores_the_same_whatever_its_slot_when_given_a_uid(config: ForestConfig) -> None:
    values = _seasonal(50)
    a = Forest(config, capacity=8)
    a.add_series(5)
    sa = a.add_series(1, uids=np.array([123], dtype=np.uint64))
    b = Forest(config, capacity=8)
    sb = b.add_series(1, uids=np.array([123], dtype=np.uint64))
    assert sa[0] != sb[0]
    assert np.array_equal(
        a.update(np.repeat(sa, 50), values).raw_score, b.update(np.repeat(sb, 50), values).raw_score
    )


@BOTH
def test_growing_capacity_keeps_every_series_state(config: ForestConfig) -> None:
    grown = Forest(config, capacity=1)
    big = Forest(config, capacity=64)
    s1, s2 = grown.add_series(3), big.add_series(3)
    assert grown.capacity >= 3
    v = _seasonal(40)
    first = grown.update(np.repeat(s1, 40), np.tile(v, 3))
    grown.add_series(20)  # grows again, by doubling
    assert grown.capacity >= 23
    more = grown.update(np.repeat(s1, 10), np.tile(v[:10], 3))
    ref_first = big.update(np.repeat(s2, 40), np.tile(v, 3))
    ref_more = big.update(np.repeat(s2, 10), np.tile(v[:10], 3))
    assert np.array_equal(first.raw_score, ref_first.raw_score)
    assert np.array_equal(more.raw_score, ref_more.raw_score)


@BOTH
def test_removed_series_are_cleared_and_their_slots_reused(config: ForestConfig) -> None:
    forest = Forest(config, capacity=4)
    slots = forest.add_series(2)
    forest.update(np.repeat(slots, 30), np.tile(_seasonal(30), 2))
    forest.remove_series(slots[:1])
    assert forest.n_series == 1
    with pytest.raises(DetectorError, match="unknown series slot"):
        forest.update(slots[:1], np.array([1.0]))
    again = forest.add_series(1)
    assert again[0] == slots[0]
    assert forest.n_points(again).tolist() == [0]
    state = forest.to_state(int(again[0]))
    assert int(np.abs(state["root"]).sum()) == 0 and int(state["count"].sum()) == 0


@pytest.mark.parametrize(
    "values",
    [
        np.full(60, 7.0),  # a flat line: every point equal, one leaf with a count
        np.tile([0.0, 0.0, 1.0, 0.0], 15),  # a few repeating shingles
        1e7 + np.round(_seasonal(60)),  # large values: stored relative to the first one
        1e12 + _seasonal(60),  # beyond float32's precision without the offset
    ],
)
@pytest.mark.parametrize("every", [1, 3])
def test_duplicates_and_large_values_keep_the_trees_valid(values: np.ndarray, every: int) -> None:
    kind = "codisp" if every == 1 else "isolation"
    config = ForestConfig(
        n_trees=3, sample_size=8, shingle_size=2, seed=1, raw_score=kind, insert_every=every
    )
    forest = Forest(config, capacity=1)
    slot = forest.add_series(1)
    out = forest.update(np.repeat(slot, values.size), values)
    assert np.isfinite(out.raw_score).all() and np.isfinite(out.expected).all()
    check_state(forest.to_state(int(slot[0])))
    assert np.all(np.abs(out.expected - values) <= np.ptp(values) + 1e-6)


def test_a_flat_line_scores_low_and_a_jump_off_it_scores_high() -> None:
    config = ForestConfig(
        n_trees=10, sample_size=32, shingle_size=2, seed=0, raw_score="codisp", insert_every=1
    )
    forest = Forest(config, capacity=1)
    slot = forest.add_series(1)
    values = np.r_[np.full(80, 5.0), 50.0]
    out = forest.update(np.repeat(slot, values.size), values)
    assert out.raw_score[-2] == 0.0  # one leaf holding every point: nothing to displace
    assert out.raw_score[-1] >= 16  # cut off at once: CoDisp = the window (31 others) in every tree
    assert out.expected[-1] == 5.0


@pytest.mark.parametrize("every", [1, 4])
def test_the_expected_value_follows_a_clean_seasonal_pattern(every: int) -> None:
    kind = "codisp" if every == 1 else "isolation"
    config = ForestConfig(
        n_trees=20, sample_size=64, shingle_size=4, seed=0, raw_score=kind, insert_every=every
    )
    forest = Forest(config, capacity=1)
    slot = forest.add_series(1)
    values = 10 * np.sin(np.arange(300) * 2 * np.pi / 20)
    out = forest.update(np.repeat(slot, 300), values)
    err = np.abs(out.expected[100:] - values[100:])
    assert np.median(err) < 0.5  # amplitude 10: the forest knows the pattern


@BOTH
def test_bad_input_is_refused_with_a_clear_error(config: ForestConfig) -> None:
    forest = Forest(config, capacity=2)
    slot = forest.add_series(1)
    with pytest.raises(DetectorError, match="finite"):
        forest.update(slot, np.array([np.nan]))
    with pytest.raises(DetectorError, match="differ in length"):
        forest.update(slot, np.array([1.0, 2.0]))
    with pytest.raises(DetectorError, match="unknown series slot"):
        forest.update(np.array([5]), np.array([1.0]))
    out = forest.update(np.zeros(0, np.int64), np.zeros(0))
    assert out.raw_score.shape == (0,)


@pytest.mark.parametrize(
    "config",
    [
        ForestConfig(n_trees=50, sample_size=256, shingle_size=4, raw_score="codisp", insert_every=1),
        ForestConfig(),
    ],
)
def test_memory_per_series_is_under_300_kb(config: ForestConfig) -> None:
    forest = Forest(config, capacity=1)
    assert forest.bytes_per_series <= 300_000


def test_a_forest_for_100000_series_is_allocated_lazily() -> None:
    forest = Forest(ForestConfig(), capacity=100_000)
    slots = forest.add_series(100_000)
    assert slots.shape == (100_000,) and forest.n_series == 100_000
    out = forest.update(slots[-3:], np.array([1.0, 2.0, 3.0]))
    assert out.raw_score.tolist() == [0.0, 0.0, 0.0]


def test_backend_auto_falls_back_to_the_cpu_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    try:
        get_backend("gpu")
        pytest.skip("a GPU is usable here")
    except BackendUnavailable as exc:
        assert "gpu" in str(exc)
    with caplog.at_level(logging.WARNING, logger="detector.backend"):
        forest = Forest(SMALL, backend="auto")
    assert forest.backend == "cpu"
    assert "falling back to cpu" in caplog.text
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        Forest(SMALL, backend="tpu")


@BOTH
def test_the_threaded_driver_gives_the_same_scores_as_the_serial_one(config: ForestConfig) -> None:
    """20 series in a batch run on numba threads; each one alone runs on the calling thread."""
    values = np.stack([_seasonal(40, i) for i in range(20)], axis=1)
    batched = Forest(config, capacity=20)
    slots = batched.add_series(20)
    many = np.stack([batched.update(slots, values[i]).raw_score for i in range(40)])
    for k in (0, 7, 19):
        alone = Forest(config, capacity=1)
        alone.add_series(1, uids=np.array([k], dtype=np.uint64))
        one = alone.update(np.zeros(40, np.int64), values[:, k]).raw_score
        assert np.array_equal(one, many[:, k])


def test_isolation_scores_a_point_before_it_joins_its_class_of_trees() -> None:
    """The first full shingle meets empty trees (0); a repeat of it is 'seen' (a damped score
    below 1); a point far off a flat line is cut off at the root of every tree: log2(mass + 1)."""
    config = ForestConfig(n_trees=6, sample_size=16, shingle_size=1, seed=0, insert_every=3)
    forest = Forest(config, capacity=1)
    slot = forest.add_series(1)
    out = forest.update(np.repeat(slot, 40), np.full(40, 5.0))
    assert out.raw_score[0] == 0.0
    assert 0.0 < out.raw_score[-1] < 1.0  # equal to every point the trees hold
    jump = forest.update(slot, np.array([50.0])).raw_score[0]
    masses = [min(13, 16)] * 6  # each class holds 13 or 14 of the 40 flat points
    assert jump >= np.log2(masses[0] + 1) - 1e-9
    state = forest.to_state(int(slot[0]))
    check_state(state)


def test_each_class_of_trees_holds_its_share_of_the_store() -> None:
    """insert_every=4, sample_size=8: the store keeps the last 32 points; each point belongs to
    one of 4 classes (the trees t, t+4, ...), each class holds 8 of them, and together all 32."""
    config = ForestConfig(n_trees=8, sample_size=8, shingle_size=1, seed=2, insert_every=4)
    forest = Forest(config, capacity=1)
    slot = forest.add_series(1)
    forest.update(np.repeat(slot, 100), np.arange(100.0))
    state = forest.to_state(int(slot[0]))
    check_state(state)  # leaves of tree t == the live points of class t % 4
    assert state["points"].shape[0] == 32
    assert (state["root"] > 0).all()
    top = state["root"].astype(int) - 1  # each tree's root node
    masses = [int(state["mass_left"][t, m]) + int(state["mass_right"][t, m]) for t, m in enumerate(top)]
    assert masses == [8] * 8


def test_a_codisp_forest_needs_insert_every_1_and_the_store_is_bounded() -> None:
    with pytest.raises(ValueError, match="insert_every 1"):
        ForestConfig(raw_score="codisp", insert_every=2)
    with pytest.raises(ValueError, match="32767"):
        ForestConfig(sample_size=4096, insert_every=10)
    with pytest.raises(ValueError, match="needs a tree"):
        ForestConfig(n_trees=3, insert_every=4)
