"""After an alert the echoes of an anomaly are suppressed, but a new value far outside the series'
range still gets through (suppress_break_sigma)."""

from __future__ import annotations

import numpy as np

from detector.config import ForestConfig, ModelConfig, ScoringConfig
from detector.detector import Detector


def _decisions(break_sigma: float) -> np.ndarray:
    rng = np.random.default_rng(4)
    n = 700
    values = 100 + 5 * np.sin(np.arange(n) / 6) + rng.normal(0, 1, n)
    values[500] = 200.0  # first spike
    values[503] = 112.0  # an echo: unusual, but within a few sigma of the level
    values[530] = 240.0  # a new, larger spike inside the suppression period
    config = ModelConfig(
        forest=ForestConfig(seed=1),
        scoring=ScoringConfig(suppress_points=75, suppress_break_sigma=break_sigma),
    )
    out = Detector(config).process_many(["s"] * n, values, np.arange(n, dtype=np.int64) * 60_000)
    return np.asarray(out.decision)


def test_a_new_extreme_value_breaks_through_suppression() -> None:
    d = _decisions(8.0)
    assert d[500] == 1 and d[530] == 1
    assert d[501:530].sum() == 0  # the echo at 503 stays quiet


def test_without_break_through_everything_in_the_period_is_suppressed() -> None:
    d = _decisions(0.0)
    assert d[500] == 1 and d[530] == 0
