"""One incident, one alert: after an alert the series' echoes are held below the threshold for
suppress_points, but a different anomaly (a move the other way, or anything after the series has
been quiet for a while: the incident is over) still gets through."""

from __future__ import annotations

import numpy as np

from detector.config import ForestConfig, ModelConfig, ScoringConfig
from detector.detector import Detector


def _decisions(suppress_points: int) -> np.ndarray:
    rng = np.random.default_rng(4)
    n = 900
    values = 100 + 5 * np.sin(np.arange(n) / 6) + rng.normal(0, 1, n)
    values[600] = 200.0  # a spike
    values[603] = 160.0  # its echo: another high point in the same incident
    values[612] = 240.0  # a larger spike, still the same direction, before the series calmed down
    values[620] = 20.0  # a collapse: a different anomaly
    values[700] = 240.0  # a spike after 79 quiet points: a new incident
    config = ModelConfig(
        forest=ForestConfig(seed=1),
        scoring=ScoringConfig(suppress_points=suppress_points, learning_ms=0),
    )
    out = Detector(config).process_many(["s"] * n, values, np.arange(n, dtype=np.int64) * 60_000)
    return np.asarray(out.decision)


def test_echoes_are_suppressed_and_a_move_the_other_way_gets_through() -> None:
    d = _decisions(100)
    assert d[600] == 1
    assert d[601:620].sum() == 0  # the echo at 603 and the spike at 612 stay quiet
    assert d[620] == 1
    assert d[700] == 1


def test_without_suppression_each_spike_alerts() -> None:
    d = _decisions(0)
    assert d[600] == 1 and d[603] == 1 and d[612] == 1 and d[620] == 1
