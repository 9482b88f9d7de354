"""Forest state: versioned, round-trips exactly, and the v1 format stays loadable (golden file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.config import ForestConfig
from detector.errors import DetectorError, StateVersionError
from detector.forest import STATE_VERSION, Forest, check_state

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "forest_state_v1.npz"
CONFIG = ForestConfig(n_trees=3, sample_size=8, shingle_size=2, seed=5, raw_score="codisp", insert_every=1)
#: The stream the golden state was made from, then the values scored after loading it.
HISTORY = np.r_[np.sin(np.arange(20) / 2.0) * 3, np.full(6, 1.5), [9.0, -2.0, 1.5, 1.5]]
FUTURE = np.array([0.5, 1.5, 1.5, 7.0, -3.0, 0.0, 0.25, 1.5, 2.0, 2.5])


def _to_npz(state: dict[str, Any], future: Any) -> dict[str, Any]:
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    return {
        **arrays,
        "meta": np.array(json.dumps(meta)),
        "future_score": future.raw_score,
        "future_expected": future.expected,
    }


def _from_npz(path: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    with np.load(path) as z:
        state = {k: z[k] for k in z.files if k not in ("meta", "future_score", "future_expected")}
        state.update(json.loads(str(z["meta"])))
        return state, z["future_score"], z["future_expected"]


def _golden_run() -> tuple[dict[str, Any], Any]:
    forest = Forest(CONFIG, capacity=1)
    slot = forest.add_series(1, uids=np.array([42], dtype=np.uint64))
    forest.update(np.repeat(slot, HISTORY.size), HISTORY)
    state = forest.to_state(int(slot[0]))
    future = forest.update(np.repeat(slot, FUTURE.size), FUTURE)
    return state, future


def write_golden() -> None:  # pragma: no cover - run once, by hand, when a new version is born
    state, future = _golden_run()
    np.savez(GOLDEN, **_to_npz(state, future))


def test_state_round_trips_and_the_copy_continues_identically() -> None:
    forest = Forest(CONFIG, capacity=2)
    slot = int(forest.add_series(1)[0])
    forest.update(np.repeat(slot, HISTORY.size), HISTORY)
    state = forest.to_state(slot)
    assert state["version"] == STATE_VERSION and state["kind"] == "cutstream.forest"
    check_state(state)
    other = Forest(CONFIG, capacity=1)
    other.add_series(3)
    copy = other.from_state(state)
    assert copy != slot
    for name, value in other.to_state(copy).items():
        assert np.array_equal(value, state[name]) if isinstance(value, np.ndarray) else value == state[name]
    a = forest.update(np.repeat(slot, FUTURE.size), FUTURE)
    b = other.update(np.repeat(copy, FUTURE.size), FUTURE)
    assert np.array_equal(a.raw_score, b.raw_score) and np.array_equal(a.expected, b.expected)


def test_the_golden_v1_state_loads_and_scores_as_it_did() -> None:
    state, score, expected = _from_npz(GOLDEN)
    assert state["version"] == 1
    forest = Forest(CONFIG, capacity=1)
    slot = forest.from_state(state)
    out = forest.update(np.repeat(slot, FUTURE.size), FUTURE)
    assert np.array_equal(out.raw_score, score)
    assert np.array_equal(out.expected, expected)


def test_the_state_format_has_not_drifted_from_the_golden_file() -> None:
    """A change that alters the saved state (fields, meaning, random stream) needs a new version."""
    golden, _, _ = _from_npz(GOLDEN)
    state, _ = _golden_run()
    assert sorted(state) == sorted(golden)
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == golden[name].dtype, name
            assert np.array_equal(value, golden[name]), name
        else:
            assert value == golden[name], name


def test_unknown_versions_and_other_configs_are_refused() -> None:
    forest = Forest(CONFIG, capacity=1)
    slot = int(forest.add_series(1)[0])
    state = forest.to_state(slot)
    with pytest.raises(StateVersionError, match="version 99"):
        forest.from_state({**state, "version": 99})
    with pytest.raises(StateVersionError, match="not a forest state"):
        forest.from_state({**state, "kind": "something.else"})
    other = Forest(CONFIG.model_copy(update={"n_trees": 4}), capacity=1)
    with pytest.raises(DetectorError, match="forest config"):
        other.from_state(state)
