"""Contract checks of the Detector facade: the one scoring path for live, replay, backfill and offline."""

from __future__ import annotations

import numpy as np
import pytest

from detector.config import ForestConfig, ModelConfig, ScoringConfig
from detector.detector import STATE_VERSION, Detector, ScoreBatch, SlotMap
from detector.errors import DetectorError, StateVersionError

SMALL = ModelConfig(
    forest=ForestConfig(n_trees=5, sample_size=32, shingle_size=2, seed=3),
    scoring=ScoringConfig(learning_points=30, learning_ms=0, confidence_points=100.0),
)
KEYS = ("series-a", "series-b", "series-c")


def stream(n_per_key: int = 120, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Interleaved points of three series (round-robin), with one spike in series-b."""
    rng = np.random.default_rng(seed)
    keys, values, ts = [], [], []
    for i in range(n_per_key):
        for j, k in enumerate(KEYS):
            v = np.sin(i / 5.0 + j) + 0.05 * rng.standard_normal()
            if k == "series-b" and i == 100:
                v += 8.0
            keys.append(k)
            values.append(v)
            ts.append(1_700_000_000_000 + i * 60_000)
    return keys, np.array(values), np.array(ts, dtype=np.int64)


def assert_same(a: ScoreBatch, b: ScoreBatch) -> None:
    for name in (
        "raw_score",
        "anomaly_score",
        "threshold",
        "decision",
        "confidence",
        "inference",
        "processed_points",
        "expected_value",
        "missing",
        "expected_low",
        "expected_high",
        "reason",
        "value_score",
        "forest_score",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_outputs_are_aligned_typed_and_in_range():
    keys, values, ts = stream()
    out = Detector(SMALL).process_many(keys, values, ts)
    n = len(keys)
    assert len(out) == n
    assert out.decision.dtype == np.int8 and out.inference.dtype == np.bool_
    assert out.processed_points.dtype == np.int64
    assert np.all((out.anomaly_score >= 0) & (out.anomaly_score <= 100))
    assert np.all((out.confidence >= 0) & (out.confidence <= 100))
    assert np.all(out.threshold == SMALL.scoring.threshold)
    assert np.all(out.anomaly_score[~out.inference] == 0.0)
    for k in KEYS:
        mine = np.array(keys) == k
        assert np.array_equal(out.processed_points[mine], np.arange(1, mine.sum() + 1))
    spike = np.flatnonzero(np.array(keys) == "series-b")[100]
    assert out.decision[spike] == 1


def test_seeded_runs_repeat_to_the_bit():
    keys, values, ts = stream()
    assert_same(
        Detector(SMALL).process_many(keys, values, ts), Detector(SMALL).process_many(keys, values, ts)
    )


def test_batch_boundaries_do_not_change_the_scores():
    keys, values, ts = stream()
    whole = Detector(SMALL).process_many(keys, values, ts)
    det = Detector(SMALL)
    parts = [
        det.process_many(keys[a:b], values[a:b], ts[a:b]) for a, b in ((0, 7), (7, 200), (200, len(keys)))
    ]
    glued = ScoreBatch(
        **{f: np.concatenate([getattr(p, f) for p in parts]) for f in whole.__dataclass_fields__}
    )
    assert_same(whole, glued)


def test_a_series_scores_the_same_whatever_else_is_in_the_detector():
    keys, values, ts = stream()
    mine = np.array(keys) == "series-c"
    together = Detector(SMALL).process_many(keys, values, ts).take(mine)
    alone = Detector(SMALL).process_many([k for k in keys if k == "series-c"], values[mine], ts[mine])
    assert_same(together, alone)


def test_state_round_trip_continues_identically_and_marks_warm_start():
    keys, values, ts = stream()
    cut = 150
    reference = Detector(SMALL)
    reference.process_many(keys[:cut], values[:cut], ts[:cut])
    expected = reference.process_many(keys[cut:], values[cut:], ts[cut:])

    first = Detector(SMALL)
    first.process_many(keys[:cut], values[:cut], ts[:cut])
    state = first.to_state()
    assert state["version"] == STATE_VERSION
    assert sorted(state["keys"]) == sorted(KEYS)
    second = Detector(SMALL)
    assert sorted(second.from_state(state)) == sorted(KEYS)
    resumed = second.process_many(keys[cut:], values[cut:], ts[cut:])
    assert_same(expected, resumed)
    assert not resumed.warm_started.any()  # a checkpoint restore is not a warm start
    assert not expected.warm_started.any()
    warm = Detector(SMALL)
    warm.from_state(state, warm_start=True)
    assert warm.process_many(keys[cut:], values[cut:], ts[cut:]).warm_started.all()
    again = Detector(SMALL)
    again.from_state(warm.to_state())  # the mark travels with the state
    assert again.process_many(keys[-1:], values[-1:], ts[-1:] + 60_000).warm_started.all()


def test_from_state_refuses_an_unknown_version():
    det = Detector(SMALL)
    det.process_many(["k"] * 5, np.arange(5.0), np.arange(5, dtype=np.int64))
    state = det.to_state(["k"])
    with pytest.raises(StateVersionError):
        Detector(SMALL).from_state({**state, "version": 999})


def test_evict_forgets_a_series_and_it_restarts_fresh():
    keys, values, ts = stream()
    det = Detector(SMALL)
    det.process_many(keys, values, ts)
    assert det.evict(["series-a", "no-such-series"]) == 1
    assert sorted(det.keys()) == ["series-b", "series-c"]
    with pytest.raises(DetectorError):
        det.to_state(["series-a"])
    mine = np.array(keys) == "series-a"
    again = det.process_many(["series-a"] * int(mine.sum()), values[mine], ts[mine])
    fresh = Detector(SMALL).process_many(["series-a"] * int(mine.sum()), values[mine], ts[mine])
    assert again.processed_points[0] == 1
    assert_same(again, fresh)


def test_inputs_are_not_mutated():
    keys, values, ts = stream()
    missing = np.zeros(len(keys), dtype=bool)
    missing[::17] = True
    copies = (list(keys), values.copy(), ts.copy(), missing.copy())
    out = Detector(SMALL).process_many(keys, values, ts, missing)
    assert keys == copies[0]
    np.testing.assert_array_equal(values, copies[1])
    np.testing.assert_array_equal(ts, copies[2])
    np.testing.assert_array_equal(missing, copies[3])
    out.missing[:] = False  # the batch owns its arrays
    np.testing.assert_array_equal(missing, copies[3])


def test_missing_points_are_flagged_and_lower_confidence():
    keys, values, ts = stream()
    missing = np.zeros(len(keys), dtype=bool)
    missing[300:] = np.array(keys[300:]) == "series-a"
    plain = Detector(SMALL).process_many(keys, values, ts)
    gappy = Detector(SMALL).process_many(keys, values, ts, missing)
    assert np.array_equal(gappy.missing, missing)
    assert np.all(gappy.confidence[missing] < plain.confidence[missing])


def test_bad_inputs_raise_detector_errors():
    det = Detector(SMALL)
    with pytest.raises(DetectorError):
        det.process_many(["a", "b"], np.array([1.0]), np.array([0, 1], dtype=np.int64))
    with pytest.raises(DetectorError):
        det.process_many(["a"], np.array([np.nan]), np.array([0], dtype=np.int64))
    assert len(det.process_many([], np.zeros(0), np.zeros(0, dtype=np.int64))) == 0


def test_process_slots_is_process_many_without_the_keys():
    keys, values, ts = stream()
    by_key = Detector(SMALL)
    by_slot = Detector(SMALL)
    cut = 150
    assert_same(
        by_key.process_many(keys[:cut], values[:cut], ts[:cut]),
        by_slot.process_many(keys[:cut], values[:cut], ts[:cut]),
    )
    slots = by_slot.slots_of(keys[cut:])
    assert_same(
        by_key.process_many(keys[cut:], values[cut:], ts[cut:]),
        by_slot.process_slots(slots, values[cut:], ts[cut:]),
    )
    assert by_key.to_state()["scores"]["level"].tolist() == by_slot.to_state()["scores"]["level"].tolist()


def test_process_slots_refuses_a_slot_no_series_holds():
    keys, values, ts = stream(10)
    det = Detector(SMALL)
    det.process_many(keys, values, ts)
    slots = det.slots_of(["series-a", "series-b"])
    epoch = det.epoch
    assert det.evict(["series-a"]) == 1 and det.epoch > epoch
    with pytest.raises(DetectorError, match="holds no series"):
        det.process_slots(slots, np.ones(2), np.zeros(2, dtype=np.int64))
    with pytest.raises(DetectorError, match="holds no series"):
        det.process_slots(np.array([10**6]), np.ones(1), np.zeros(1, dtype=np.int64))
    with pytest.raises(DetectorError, match="aligned"):
        det.process_slots(slots[1:], np.ones(2), np.zeros(2, dtype=np.int64))


def test_a_slot_map_follows_evictions_and_restores():
    """A slot freed by an eviction may go to another series: the map must not keep the old one."""
    keys, values, ts = stream(40)
    names = {k: i for i, k in enumerate(KEYS)}
    ids = np.array([names[k] for k in keys])
    reference = Detector(SMALL)
    det = Detector(SMALL)
    slot_map = SlotMap(det)

    def lookup(at: np.ndarray) -> list[str]:
        return [KEYS[i] for i in at.tolist()]

    half = 60
    assert_same(reference.process_many(keys[:half], values[:half], ts[:half]),
                det.process_slots(slot_map.slots(ids[:half], lookup), values[:half], ts[:half]))  # fmt: skip
    saved = det.to_state(["series-a"])
    det.evict(["series-a", "series-b"])
    det.process_many(["new-1", "new-2"], np.ones(2), ts[half : half + 2])  # takes the freed slots
    det.evict(["new-1", "new-2"])
    det.from_state(saved)  # series-a comes back in another slot; series-b starts afresh
    reference.evict(["series-b"])
    rest = slice(half, None)
    assert_same(reference.process_many(keys[rest], values[rest], ts[rest]),
                det.process_slots(slot_map.slots(ids[rest], lookup), values[rest], ts[rest]))  # fmt: skip
