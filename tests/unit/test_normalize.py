"""The scoring stage on its own: values (and the forest's raw scores) in, anomalyScore, decision,
reason, expected band and confidence out (detector/normalize.py: ``prepare`` then ``judge``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detector.config import ModelConfig, ScoringConfig
from detector.detector import _params
from detector.errors import StateVersionError
from detector.normalize import REASONS, NormalizerParams, NormalizerState, judge, prepare

MINUTE = 60_000
VALUE, SUSTAINED, FOREST = (REASONS.index(r) for r in ("value", "sustained", "forest"))


def params(**overrides) -> NormalizerParams:
    """The default scoring stage, out of LEARNING after 64 points whatever time they span."""
    base = replace(_params(ModelConfig(scoring=ScoringConfig())), learning_ms=0.0)
    return replace(base, **overrides)


def run(values, ts=None, raw=None, missing=None, p=None, state=None, slot=0, events=None):
    values = np.asarray(values, float)
    n = values.shape[0]
    p = p or params()
    state = state or NormalizerState()
    state.ensure(slot + 1)
    ts = np.arange(n, dtype=np.int64) * MINUTE if ts is None else np.asarray(ts, np.int64)
    raw = np.ones(n) if raw is None else np.asarray(raw, float)
    missing = np.zeros(n, bool) if missing is None else np.asarray(missing, bool)
    slots = np.full(n, slot, np.int64)
    prep = prepare(state, p, slots, values, ts, events)
    return judge(state, p, slots, raw, prep, values, ts, missing), state


def noisy(n=1000, seed=7, level=100.0, sd=1.0):
    return level + sd * np.random.default_rng(seed).standard_normal(n)


def test_learning_ends_after_enough_points_spanning_a_day():
    values = noisy(3000)
    quick, _ = run(values, p=params(learning_points=50))
    assert np.all(quick.anomaly_score[:50] == 0.0) and not quick.inference[:50].any()
    assert quick.inference[50:].all()
    assert np.array_equal(quick.processed_points, np.arange(1, 3001))
    daily, _ = run(values, p=params(learning_ms=86_400_000.0))  # one-minute points: a day is 1,440
    assert int(np.argmax(daily.inference)) == 1440 and daily.inference[1440:].all()
    capped, _ = run(values, p=params(learning_ms=86_400_000.0, learning_max_points=500))
    assert int(np.argmax(capped.inference)) == 499


def test_a_spike_in_the_value_scores_high_with_its_reason_and_ordinary_points_low():
    values = noisy(1000)
    values[800] = 130.0
    out, _ = run(values)
    assert out.decision[800] == 1 and out.anomaly_score[800] > 90.0 and out.reason[800] == VALUE
    assert out.value_score[800] > 90.0
    ordinary = np.delete(out.anomaly_score[100:], [700])
    assert np.median(ordinary) < 15.0 and out.decision[100:800].sum() <= 1
    assert out.anomaly_score.min() >= 0.0 and out.anomaly_score.max() <= 100.0
    assert out.expected_low[800] < 100.0 < out.expected_high[800] < 130.0
    assert out.expected_value[800] == pytest.approx(100.0, abs=0.5)


def test_a_short_dip_too_shallow_for_any_one_point_is_caught_by_the_sustained_channel():
    values = noisy(1000)
    depth = 4.0  # each point alone is a 4-sigma event: not enough on its own
    values[800:806] -= depth
    out, _ = run(values)
    assert out.decision[800:806].any()
    assert SUSTAINED in out.reason[800:806][out.decision[800:806] == 1]
    one = noisy(1000)
    one[800] -= depth
    single, _ = run(one)
    assert single.decision[800] == 0


def test_a_lasting_shift_is_one_alert_however_long_it_lasts():
    values = noisy(1500)
    values[1000:1300] -= 1.5  # 1.5 sigma: no single point is unusual
    out, _ = run(values)
    flagged = np.flatnonzero(out.decision[1000:1400])
    assert flagged.size == 1 and flagged[0] < 30
    assert REASONS[out.reason[1000 + flagged[0]]] in ("sustained", "shift")
    assert out.decision[:1000].sum() == 0


def test_the_daily_rhythm_is_not_news_but_the_same_value_at_night_is():
    five = 5 * MINUTE
    n = 288 * 10  # ten days of 5-minute points
    ts = np.arange(n, dtype=np.int64) * five
    hour = (ts // 3_600_000) % 24
    values = np.where((hour >= 9) & (hour < 17), 150.0, 100.0) + noisy(n, sd=1.0) - 100.0
    night = 288 * 9 + 3 * 12  # day 10, 03:00
    values[night] = 150.0
    out, _ = run(values, ts=ts)
    day_peak = slice(288 * 8 + 9 * 12 + 2, 288 * 8 + 17 * 12 - 2)  # day 9, 09:10-16:50
    assert out.decision[day_peak].sum() == 0
    assert out.expected_value[288 * 8 + 12 * 12] == pytest.approx(150.0, abs=2.0)
    assert out.decision[night] == 1 and out.expected_value[night] == pytest.approx(100.0, abs=2.0)


def test_a_daily_batch_job_is_not_news_where_it_ends_a_minute_into_the_next_slot_but_its_jump_elsewhere_is():
    """The job's last minute lies in the next 5-minute day slot, whose model expects the normal
    level; the job's own slot explains it. The same jump at another time of day is an anomaly."""
    n = 1440 * 10  # ten days of minute points
    ts = np.arange(n, dtype=np.int64) * MINUTE
    minute = np.arange(n) % 1440
    job = (minute >= 7 * 60 + 52) & (minute < 8 * 60 + 6)  # 07:52-08:05, every day
    values = noisy(n, sd=3.0) + np.where(job, 200.0, 0.0)
    other = 1440 * 9 + 14 * 60  # day 10, 14:00: the same jump at another time
    values[other : other + 3] += 200.0
    out, _ = run(values, ts=ts)
    later_jobs = job & (np.arange(n) >= 1440 * 7)
    assert out.decision[later_jobs].sum() == 0, np.flatnonzero(out.decision[later_jobs])
    assert out.decision[other : other + 3].any()


def test_an_average_of_fewer_events_than_usual_is_judged_with_a_wider_band():
    """An average of 1 event where 64 are usual is noisier by sqrt(64): the deviation that is an
    anomaly at the usual count is not one for a single event."""
    n = 1440 * 3  # three days of minute points
    values = noisy(n, sd=1.0)
    events = np.full(n, 64.0)
    usual, single = n - 300, n - 100
    values[usual] = values[single] = 108.0  # 8 standard deviations
    events[single] = 1.0
    out, _ = run(values, events=events)
    assert out.decision[usual] == 1
    assert out.decision[single] == 0
    band = out.expected_high - out.expected_value
    assert band[single] > 5.0 * band[usual]  # 8x on the transformed scale
    assert out.decision[: n - 300].sum() == 0  # and the usual count changes nothing


def test_a_weekly_rhythm_without_a_daily_one_is_learned_too():
    """Busy weekdays, quiet weekends, no daily shape (the day profile is no better than the level):
    from the third week, weekends are expected and a weekend-level Wednesday is not."""
    step, day = 10 * MINUTE, 144  # 10-minute points, 144 a day
    n = day * 7 * 4  # four weeks, from a Thursday (the epoch)
    ts = np.arange(n, dtype=np.int64) * step
    weekday = (np.arange(n) // day + 3) % 7  # 0 = Monday
    values = np.where(weekday >= 5, 50.0, 100.0) + noisy(n, sd=1.0) - 100.0
    wednesday = day * (7 * 3 + 6) + 72  # week 4, Wednesday noon
    values[wednesday : wednesday + 6] = 50.0
    out, _ = run(values, ts=ts)
    third_weekend = slice(day * (7 * 2 + 2) + 6, day * (7 * 2 + 4))  # week 3's Saturday and Sunday
    assert out.decision[third_weekend].sum() == 0
    assert out.expected_value[day * (7 * 2 + 2) + 72] == pytest.approx(50.0, abs=3.0)
    assert out.decision[wednesday : wednesday + 2].any()  # within its first 20 minutes


def test_the_forest_counts_only_where_the_value_is_unusual_too():
    values = noisy(1000)
    raw = 1.0 + 0.1 * np.random.default_rng(3).standard_normal(1000)
    raw[700] = raw[800] = 40.0  # the forest isolates both points
    values[800] += 4.0  # ... and only this one is a little unusual by value
    out, _ = run(values, raw=raw)
    assert out.forest_score[700] == 0.0 and out.decision[700] == 0
    assert out.forest_score[800] > 90.0 and out.reason[800] == FOREST and out.decision[800] == 1
    without, _ = run(values, raw=np.ones(1000))
    assert without.decision[800] == 0  # the value alone would not have alerted


def test_a_forest_that_keeps_alarming_without_value_evidence_loses_its_voice():
    rng = np.random.default_rng(5)
    values = noisy(4000)
    clean = 1.0 + 0.1 * rng.standard_normal(4000)
    clean[3800] = 40.0
    values[3800] += 4.0
    raw = clean.copy()
    noise = rng.choice(np.arange(1000, 3000), 60, replace=False)
    raw[noise] = 40.0  # the forest alarms often where the value is ordinary
    trusted, _ = run(values, raw=clean)
    distrusted, _ = run(values, raw=raw)
    assert trusted.forest_score[3800] > 90.0
    assert distrusted.forest_score[3800] < 0.5 * trusted.forest_score[3800]


def test_after_an_alert_echoes_are_suppressed_but_a_move_the_other_way_gets_through():
    values = noisy(1000)
    values[600] = values[610] = 130.0  # an echo 10 points on: the same incident
    values[615] = 70.0
    p = params(suppress_points=100, suppress_cap=0.5)
    out, _ = run(values, p=p)
    assert out.decision[600] == 1
    assert out.anomaly_score[610] <= 0.5 * p.threshold and out.decision[601:615].sum() == 0
    assert out.decision[615] == 1  # a dip after a spike is new evidence
    free, _ = run(values, p=replace(p, suppress_points=0))
    assert free.decision[610] == 1


def test_once_the_series_has_been_quiet_the_next_anomaly_is_a_new_incident():
    values = noisy(1000)
    values[600] = 130.0
    values[650] = 130.0  # 49 ordinary points later, well within suppress_points
    values[655] = 130.0  # ... and an echo of that one
    p = params(suppress_points=100, suppress_cap=0.5)
    out, _ = run(values, p=p)
    assert out.decision[600] == 1 and out.decision[650] == 1
    assert out.decision[655] == 0 and out.anomaly_score[655] <= 0.5 * p.threshold


def test_direction_filters_decisions_not_scores():
    values = noisy(1000)
    values[800] = 70.0  # a dip
    up, _ = run(values, p=params(direction=1))
    down, _ = run(values, p=params(direction=2))
    both, _ = run(values, p=params(direction=0))
    assert up.decision[800] == 0 and down.decision[800] == 1 and both.decision[800] == 1
    assert up.anomaly_score[800] == both.anomaly_score[800]


def test_min_relative_change_suppresses_trivial_deviations():
    values = noisy(1000, sd=0.01)
    values[800] = 101.0  # 1 % off, but 100 sigma
    small, _ = run(values, p=params(min_relative_change=0.05))
    assert small.anomaly_score[800] > 90.0 and small.decision[800] == 0
    values[800] = 120.0  # 20 % off
    big, _ = run(values, p=params(min_relative_change=0.05))
    assert big.decision[800] == 1


def test_confidence_grows_and_missing_points_lower_it():
    values = noisy(800)
    out, _ = run(values, p=params(confidence_points=400.0))
    assert np.all(np.diff(out.confidence[:400]) > 0)
    assert out.confidence[500] == pytest.approx(100.0)
    missing = np.zeros(800, bool)
    missing[600:620] = True
    gap, _ = run(values, missing=missing, p=params(confidence_points=400.0))
    assert gap.confidence[610] < 0.6 * out.confidence[610]
    assert gap.confidence[700] < out.confidence[700]  # the recent gap still weighs


def test_calibration_keeps_heavy_tailed_noise_quiet_and_still_sees_the_extreme():
    rng = np.random.default_rng(11)
    values = 100.0 + 3.0 * rng.standard_t(3.0, 20_000)  # latencies: outliers are normal here
    out, _ = run(values)
    late = out.decision[10_000:]
    # a robust z-score (median/MAD of the previous hour, |z| > 6) on the same points
    win = np.lib.stride_tricks.sliding_window_view(values, 60)[:-1]
    med = np.median(win, axis=1)
    mad = 1.4826 * np.median(np.abs(win - med[:, None]), axis=1)
    robust = np.abs(values[60:] - med) / mad > 6.0
    assert late.sum() <= 3 * 10  # at most 3 in 1,000 points ...
    assert late.sum() < 0.5 * robust[-10_000:].sum()  # ... and under half the robust z-score's
    values[19_000] = 100.0 + 3.0 * 400.0  # far beyond anything the series has done
    spike, _ = run(values)
    assert spike.decision[19_000] == 1


def test_the_band_holds_nearly_every_ordinary_value():
    values = noisy(3000)
    out, _ = run(values)
    inside = (values[500:] >= out.expected_low[500:]) & (values[500:] <= out.expected_high[500:])
    assert inside.mean() > 0.99
    assert np.all(out.expected_low[500:] < out.expected_value[500:])
    assert np.all(out.expected_value[500:] < out.expected_high[500:])


def test_repeated_slots_in_one_batch_equal_separate_calls():
    a_vals, b_vals = noisy(600, seed=1), noisy(600, seed=2, level=5.0)
    a_vals[500] = 150.0
    p = params()
    state = NormalizerState()
    slots = np.r_[np.zeros(600, np.int64), np.ones(600, np.int64)]
    order = np.argsort(np.r_[np.arange(600), np.arange(600)], kind="stable")  # a0 b0 a1 b1 ...
    ts = np.r_[np.arange(600), np.arange(600)][order] * MINUTE
    vals = np.r_[a_vals, b_vals][order]
    prep = prepare(state, p, slots[order], vals, ts)
    mixed = judge(state, p, slots[order], np.ones(1200), prep, vals, ts, np.zeros(1200, bool))
    a, _ = run(a_vals, p=p)
    b, _ = run(b_vals, p=p)
    back = np.empty(1200)
    back[order] = mixed.anomaly_score
    np.testing.assert_array_equal(back[:600], a.anomaly_score)
    np.testing.assert_array_equal(back[600:], b.anomaly_score)


def test_state_round_trip_continues_identically():
    values = noisy(1200)
    values[1000] = 140.0
    ts = np.arange(1200, dtype=np.int64) * 5 * MINUTE
    full, _ = run(values, ts=ts)
    first, state = run(values[:600], ts=ts[:600])
    saved = state.columns(np.array([0]))
    fresh = NormalizerState()
    fresh.ensure(4)
    fresh.put_columns(np.array([3]), saved)
    rest, _ = run(values[600:], ts=ts[600:], state=fresh, slot=3)
    np.testing.assert_array_equal(np.r_[first.anomaly_score, rest.anomaly_score], full.anomaly_score)
    np.testing.assert_array_equal(np.r_[first.expected_value, rest.expected_value], full.expected_value)
    np.testing.assert_array_equal(rest.processed_points, np.arange(601, 1201))


def test_a_state_of_the_wrong_shape_is_refused():
    state = NormalizerState()
    saved = state.columns(np.array([0, 1]))
    with pytest.raises(StateVersionError):
        state.put_columns(np.array([0]), saved)
    saved["day_mean"] = np.zeros((2, 7))
    with pytest.raises(StateVersionError):
        state.put_columns(np.array([0, 1]), saved)
