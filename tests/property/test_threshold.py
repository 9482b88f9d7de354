"""Thresholds are monotone: a higher threshold never flags more points."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.config import ModelConfig, ScoringConfig
from detector.detector import _params
from detector.normalize import NormalizerState, judge, prepare

BASE = replace(_params(ModelConfig(scoring=ScoringConfig(learning_points=10))), learning_ms=0.0)

values_st = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=12, max_size=300).map(np.array)
thresholds = st.tuples(st.floats(0.0, 100.0), st.floats(0.0, 100.0)).map(sorted)


def decisions(values: np.ndarray, threshold: float, suppress_points: int, direction: int = 0) -> np.ndarray:
    p = replace(BASE, threshold=threshold, suppress_points=suppress_points, direction=direction)
    n = values.shape[0]
    slots = np.zeros(n, np.int64)
    ts = np.arange(n, dtype=np.int64) * 60_000
    raw = 1.0 + np.abs(np.sin(np.arange(n, dtype=float))) * 5.0  # a forest score that moves
    state = NormalizerState()
    prep = prepare(state, p, slots, values, ts)
    out = judge(state, p, slots, raw, prep, values, ts, np.zeros(n, bool))
    return out.decision.astype(bool)


@settings(max_examples=60, deadline=None)
@given(values=values_st, ts=thresholds, direction=st.sampled_from([0, 1, 2]))
def test_without_suppression_a_higher_threshold_flags_a_subset(values, ts, direction):
    low, high = ts
    flagged_low = decisions(values, low, 0, direction)
    flagged_high = decisions(values, high, 0, direction)
    assert not np.any(flagged_high & ~flagged_low)


@settings(max_examples=60, deadline=None)
@given(values=values_st, ts=thresholds, suppress=st.integers(1, 40))
def test_with_suppression_a_higher_threshold_never_flags_more(values, ts, suppress):
    # Suppression after an alert can move an alert later, but never adds one: each alert at the
    # higher threshold is matched by an alert at the lower one at the same point or just before.
    low, high = ts
    flagged_low = decisions(values, low, suppress)
    flagged_high = decisions(values, high, suppress)
    assert flagged_high.sum() <= flagged_low.sum()
    if flagged_high.any():
        assert flagged_low.any() and np.argmax(flagged_low) <= np.argmax(flagged_high)
