"""The NAB scorer on known inputs, and a short NAB run of the detector (skips without ../shared/nab)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cutstream.bench.nab_scorer import (
    PROFILES,
    DataFile,
    file_sweep,
    load_corpus,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
)


def synthetic_file(name: str, n: int, windows: list[tuple[int, int]]) -> DataFile:
    ts = [f"2020-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(n)]
    return DataFile(name, ts, np.zeros(n), [(ts[a], ts[b]) for a, b in windows])


FILES = [synthetic_file("a.csv", 1000, [(400, 499)]), synthetic_file("b.csv", 1200, [(300, 349), (800, 899)])]


def window_rows(f: DataFile) -> list[tuple[int, int]]:
    return [(f.timestamps.index(a), f.timestamps.index(b)) for a, b in f.windows]


def test_scaled_sigmoid_matches_nab_reference_points():
    assert scaled_sigmoid(np.array(-1.0)) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(np.array(-0.5)) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(np.array(0.0)) == pytest.approx(0.0)
    assert scaled_sigmoid(np.array(3.0)) == -1.0
    assert probationary_length(1000) == 150 and probationary_length(22695) == 750


def test_perfect_detector_scores_100_and_null_detector_0():
    perfect = []
    for f in FILES:
        s = np.zeros(len(f.timestamps))
        for a, _ in window_rows(f):
            s[a] = 1.0
        perfect.append(s)
    null = [np.full(len(f.timestamps), 0.5) for f in FILES]
    for profile in PROFILES:
        assert score_corpus(FILES, perfect, [profile])[profile].score == pytest.approx(100.0)
        assert score_corpus(FILES, null, [profile])[profile].score == pytest.approx(0.0)


def test_a_detection_late_in_the_window_earns_the_sigmoid_weight():
    f = FILES[0]
    s = np.zeros(1000)
    s[474] = 1.0  # three quarters into the 100-row window [400, 499]
    res = score_corpus([f], [s], ["standard"])["standard"]
    position = -(499 - 474 + 1) / 100.0
    tp = float(scaled_sigmoid(np.array(position)) / scaled_sigmoid(np.array(-1.0)))
    assert res.raw == pytest.approx(tp)
    assert res.score == pytest.approx(100 * (tp + 1) / 2)
    assert (res.tp, res.fp, res.fn) == (1, 0, 0)


def test_false_positives_cost_the_profile_weight_and_only_after_probation():
    f = FILES[0]
    s = np.zeros(1000)
    s[200] = 1.0  # before any window: a full false positive
    s[100] = 1.0  # in the probationary period: ignored
    for profile, w in PROFILES.items():
        res = score_corpus([f], [s], [profile])[profile]
        # The optimizer may prefer no detection at all (raw = -A_FN) over one FP.
        assert res.raw == pytest.approx(max(-w["fn"] - w["fp"], -w["fn"]))
    fs = file_sweep(f, PROFILES["standard"])
    assert fs.sweep[200] == pytest.approx(-0.11)
    assert not fs.scorable[100]
    after = fs.sweep[500:]  # right after the window the penalty starts near 0 and grows
    assert after[0] > -0.01 and np.all(np.diff(after) <= 1e-12) and after[-1] == pytest.approx(-0.11)


def test_the_threshold_is_optimized_over_the_corpus():
    sa, sb = np.zeros(1000), np.zeros(1200)
    sa[400] = 0.9
    sb[300], sb[800] = 0.8, 0.6
    sb[1000] = 0.7  # an FP between the two lower detections
    res = score_corpus(FILES, [sa, sb], ["standard"])["standard"]
    assert res.threshold == pytest.approx(0.6)
    assert (res.tp, res.fp, res.fn) == (3, 1, 0)


def test_short_nab_run_scores_above_a_floor(nab_dir: Path):
    from cutstream.bench.nab import QUICK_FILES, score_cutstream

    files = load_corpus(nab_dir, QUICK_FILES)
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    assert [len(f.windows) for f in files] == [len(windows[f.name]) for f in files]
    scores, raw, _ = score_cutstream(files)
    assert all(s.shape == f.values.shape for s, f in zip(scores, files, strict=True))
    res = score_corpus(files, scores)
    # 64.6 with the default configuration (seed 0) when this floor was set; 5 files, 8 windows.
    assert res["standard"].score >= 55.0
    assert res["standard"].tp >= 5
    assert all(np.all(r >= 0) for r in raw)
