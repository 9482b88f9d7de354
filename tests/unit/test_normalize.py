"""The scoring stage on its own: raw scores in, anomalyScore / decision / confidence out."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detector.config import ModelConfig, ScoringConfig
from detector.detector import _params
from detector.errors import StateVersionError
from detector.normalize import NormalizerState, normalize

RNG = np.random.default_rng(7)


def params(**overrides):
    return replace(_params(ModelConfig(scoring=ScoringConfig())), **overrides)


def run(raw, values=None, expected=None, missing=None, p=None, state=None, slot=0):
    n = len(raw)
    p = p or params()
    state = state or NormalizerState(p.avg_points)
    values = np.zeros(n) if values is None else np.asarray(values, float)
    expected = np.zeros(n) if expected is None else np.asarray(expected, float)
    missing = np.zeros(n, bool) if missing is None else np.asarray(missing, bool)
    out = normalize(state, p, np.full(n, slot, np.int64), np.asarray(raw, float), values, expected, missing)
    return out, state


def noisy_raw(n=600, spike_at=None, spike=30.0):
    raw = 1.0 + 0.1 * RNG.standard_normal(n)
    if spike_at is not None:
        raw[spike_at] += spike
    return raw


def test_learning_scores_zero_then_inference():
    out, _ = run(noisy_raw(200, spike_at=10), p=params(learning_points=50))
    assert np.all(out.anomaly_score[:50] == 0.0)
    assert not out.inference[:50].any()
    assert out.inference[50:].all()
    assert np.array_equal(out.processed_points, np.arange(1, 201))
    assert not out.decision[:50].any()


def test_spike_scores_high_and_ordinary_points_low():
    out, _ = run(noisy_raw(600, spike_at=500))
    assert out.anomaly_score[500] > 90.0
    assert out.decision[500] == 1
    ordinary = np.delete(out.anomaly_score[100:], [400, 401])
    assert np.median(ordinary) < 10.0
    assert out.anomaly_score.min() >= 0.0 and out.anomaly_score.max() <= 100.0


def test_without_the_log_offset_scores_do_not_depend_on_the_raw_scale():
    raw = noisy_raw(600, spike_at=450)
    p = params(raw_log_offset=0.0)
    a, _ = run(raw, p=p)
    b, _ = run(raw * 1000.0, p=p)
    np.testing.assert_allclose(a.anomaly_score, b.anomaly_score, atol=1e-6)


def test_suppression_holds_scores_below_the_threshold_after_an_alert():
    raw = noisy_raw(700, spike_at=500)
    raw[530] += 30.0
    p = params(suppress_points=100, suppress_cap=0.5)
    out, _ = run(raw, p=p)
    assert out.decision[500] == 1
    assert out.anomaly_score[530] <= 0.5 * p.threshold
    assert out.decision[501:601].sum() == 0
    free, _ = run(raw, p=params(suppress_points=0))
    assert free.decision[530] == 1


def test_direction_filter_uses_value_against_expected():
    raw = noisy_raw(600, spike_at=500)
    values = np.zeros(600)
    values[500] = -5.0  # a dip
    up, _ = run(raw, values=values, p=params(direction=1))
    down, _ = run(raw, values=values, p=params(direction=2))
    both, _ = run(raw, values=values, p=params(direction=0))
    assert up.decision[500] == 0
    assert down.decision[500] == 1
    assert both.decision[500] == 1
    assert up.anomaly_score[500] == both.anomaly_score[500]  # the filter gates decisions, not scores


def test_min_relative_change_suppresses_trivial_deviations():
    raw = noisy_raw(600, spike_at=500)
    values = np.full(600, 100.0)
    expected = np.full(600, 100.0)
    values[500] = 101.0  # 1 % off
    small, _ = run(raw, values=values, expected=expected, p=params(min_relative_change=0.05))
    assert small.decision[500] == 0
    values[500] = 120.0  # 20 % off
    big, _ = run(raw, values=values, expected=expected, p=params(min_relative_change=0.05))
    assert big.decision[500] == 1


def test_confidence_grows_and_missing_points_lower_it():
    raw = noisy_raw(800)
    out, _ = run(raw, p=params(confidence_points=400.0))
    assert np.all(np.diff(out.confidence[:400]) > 0)
    assert out.confidence[500] == pytest.approx(100.0)
    missing = np.zeros(800, bool)
    missing[600:620] = True
    gap, _ = run(raw, missing=missing, p=params(confidence_points=400.0))
    assert gap.confidence[610] < 0.6 * out.confidence[610]
    assert gap.confidence[700] < out.confidence[700]  # the recent gap still weighs


def test_repeated_slots_in_one_batch_equal_separate_calls():
    raw_a, raw_b = noisy_raw(300, spike_at=250), noisy_raw(300, spike_at=200)
    p = params()
    state = NormalizerState(p.avg_points)
    slots = np.r_[np.zeros(300, np.int64), np.ones(300, np.int64)]
    order = np.argsort(np.r_[np.arange(300), np.arange(300)], kind="stable")  # interleaved a0 b0 a1 b1 ...
    z = np.zeros(600)
    mixed = normalize(state, p, slots[order], np.r_[raw_a, raw_b][order], z, z, np.zeros(600, bool))
    a, _ = run(raw_a, p=p)
    b, _ = run(raw_b, p=p)
    back = np.empty(600)
    back[order] = mixed.anomaly_score
    np.testing.assert_array_equal(back[:300], a.anomaly_score)
    np.testing.assert_array_equal(back[300:], b.anomaly_score)


def test_state_round_trip_continues_identically():
    raw = noisy_raw(600, spike_at=450)
    full, _ = run(raw)
    first, state = run(raw[:300])
    saved = state.get(0)
    fresh = NormalizerState(state.avg_points)
    fresh.put(3, saved)
    rest, _ = run(raw[300:], state=fresh, slot=3)
    np.testing.assert_array_equal(np.r_[first.anomaly_score, rest.anomaly_score], full.anomaly_score)
    np.testing.assert_array_equal(rest.processed_points, np.arange(301, 601))


def test_state_with_another_version_is_refused():
    state = NormalizerState(2)
    saved = state.get(0)
    with pytest.raises(StateVersionError):
        state.put(0, {**saved, "version": 99})
    with pytest.raises(StateVersionError):
        NormalizerState(3).put(0, saved)


def test_time_of_day_profile_expects_each_hour_its_own_level():
    from detector.normalize import profile_expected

    hours = np.arange(24 * 10)  # ten days, hourly
    ts = hours * 3_600_000
    values = np.where(hours % 24 < 12, 10.0, 50.0)  # a day/night cycle
    state = NormalizerState(2)
    exp = profile_expected(state, np.zeros(len(hours), np.int64), values, ts, 200.0, 100.0)
    assert exp[0] == values[0]  # nothing learned yet: the value itself
    assert 10.0 < exp[30] < 50.0  # day 2: hour 6 has 1 sample, the EW level stands in
    np.testing.assert_allclose(exp[24 * 3 :], values[24 * 3 :])  # from day 4 on: the hour's own level
    restored = NormalizerState(2)
    restored.put(0, state.get(0))
    nxt = profile_expected(
        restored, np.zeros(1, np.int64), np.array([10.0]), np.array([ts[-1] + 3_600_000]), 200.0, 100.0
    )
    assert nxt[0] == pytest.approx(10.0)  # hour 0 of day 11, restored from the saved state
