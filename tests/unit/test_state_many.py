"""Bulk model state (checkpoints): many series in a few arrays, restored bit for bit.

``Forest.to_state_many`` / ``from_state_many`` and ``Detector.to_state`` (version 2 on) take and place
all series of a checkpoint at once. A restored model must score the next points exactly as the
original would, and checkpoints written before the bulk format (detector state version 1) must
still load: ``tests/golden/checkpoint_v2_detector_v1.ckpt`` was written by the code of commit
d036cc1 (per-series ``Detector.to_state``, checkpoint layout 2), with the scores that followed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.config import ForestConfig, ModelConfig, ScoringConfig
from detector.detector import STATE_VERSION, Detector, ScoreBatch
from detector.errors import DetectorError, StateVersionError
from detector.forest import MANY_STATE_KIND, Forest, check_state
from streams.checkpoint import Checkpoint, CheckpointError, CheckpointStore, dumps, loads

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FOREST = ForestConfig(n_trees=4, sample_size=16, shingle_size=3, seed=11, raw_score="codisp", insert_every=1)
T0 = 1_700_000_000_000


def _fill(forest: Forest, lengths: dict[str, int], seed: int = 0) -> dict[str, int]:
    """One series per name with that many values: sines, a constant run (duplicates), empties."""
    rng = np.random.default_rng(seed)
    slots = dict(zip(lengths, forest.add_series(len(lengths)).tolist(), strict=True))
    rows = []
    for name, n in lengths.items():
        if name.startswith("flat"):
            vals = np.where(np.arange(n) % 4 == 0, 1.5, 1.0)  # two distinct values, many duplicates
        else:
            vals = np.round(np.sin(np.arange(n) / 3.0 + len(rows)) * 5 + rng.normal(0, 0.2, n), 2)
        rows += [(i, slots[name], v) for i, v in enumerate(vals)]
    rows.sort(key=lambda r: r[0])  # interleaved, as a batch of many series arrives
    if rows:
        forest.update(np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
    return slots


def _future(slots: list[int], n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    s = np.tile(np.asarray(slots), n)
    vals = np.cos(np.arange(s.size) / 4.0) * 5
    vals[::5] = 1.0  # a value some series already hold: a duplicate
    vals[7] = 40.0  # a spike
    return s, vals


def _assert_states_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == b[name].dtype, name
            assert np.array_equal(value, b[name]), name
        else:
            assert value == b[name], name


LENGTHS = {"full": 60, "flat": 50, "young": 5, "shingling": 2, "empty": 0, "half": 12, "flat-young": 9}


def test_forest_many_round_trip_is_bit_identical() -> None:
    forest = Forest(FOREST, capacity=2)
    slots = _fill(forest, LENGTHS)
    forest.remove_series(np.array([slots.pop("half")]))  # a freed slot, reused below
    order = ["flat-young", "full", "empty", "young", "flat", "shingling"]
    state = forest.to_state_many([slots[k] for k in order])
    assert state["kind"] == MANY_STATE_KIND
    assert state["left"].shape == (FOREST.n_trees * int(state["used"].sum()),)
    assert int(state["used"][order.index("full")]) == FOREST.sample_size - 1
    assert int(state["used"][order.index("empty")]) == 0

    other = Forest(FOREST, capacity=1)
    _fill(other, {"resident": 30}, seed=3)
    data = dumps(Checkpoint(topic="t", partition=0, next_offset=1, detectors={"f": state}))
    restored_state = loads(bytearray(data)).detectors["f"]
    copies = other.from_state_many(restored_state)
    assert copies.shape == (len(order),)
    _assert_states_equal(other.to_state_many(copies), state)
    for slot in copies:
        check_state(other.to_state(int(slot)))

    a = forest.update(*_future([slots[k] for k in order]))
    b = other.update(*_future(copies.tolist()))
    assert np.array_equal(a.raw_score, b.raw_score)
    assert np.array_equal(a.expected, b.expected, equal_nan=True)
    assert a.raw_score.max() > 0  # the comparison covered real scores


def test_the_row_gather_used_on_gpus_gives_the_same_state_as_the_host_path() -> None:
    """CuPy has no void dtype, so on a GPU node records move as rows of R/4 words: run that branch
    over host arrays (a numpy stand-in for CuPy's API) and compare it with the host path."""
    import types

    from detector.backend import Backend

    shim = types.SimpleNamespace(**{n: getattr(np, n) for n in ("zeros", "asarray")}, asnumpy=np.asarray)
    host = Forest(FOREST, capacity=2)
    slots = _fill(host, LENGTHS)
    order = [slots[k] for k in ("full", "flat", "young", "empty", "shingling")]
    want = host.to_state_many(order)
    rows = Forest(FOREST, capacity=2)
    _fill(rows, {"resident": 30}, seed=3)
    rows._backend = Backend("gpu", shim)  # type: ignore[arg-type]
    copies = rows.from_state_many(want)
    _assert_states_equal(rows.to_state_many(copies), want)
    rows._backend = Backend("cpu", np)
    a = host.update(*_future(order))
    b = rows.update(*_future(copies.tolist()))
    assert np.array_equal(a.raw_score, b.raw_score) and a.raw_score.max() > 0


def test_the_one_series_state_is_a_slice_of_the_many_series_state() -> None:
    forest = Forest(FOREST, capacity=4)
    slots = _fill(forest, LENGTHS)
    names = list(slots)
    many = forest.to_state_many([slots[k] for k in names])
    first = 0
    for i, name in enumerate(names):
        one = forest.to_state(slots[name])
        used = int(many["used"][i])
        assert one["left"].shape == (FOREST.n_trees, used)
        assert np.array_equal(one["points"], many["points"][i])
        rows = slice(first, first + FOREST.n_trees * used)
        assert np.array_equal(one["box_hi"].reshape(-1, FOREST.shingle_size), many["box_hi"][rows])
        assert np.array_equal(one["cut_dim"].reshape(-1), many["cut_dim"][rows])
        first = rows.stop
        copy = Forest(FOREST, capacity=1)
        _assert_states_equal(copy.to_state(copy.from_state(one)), one)


def test_a_corrupt_or_foreign_many_state_is_refused_and_adds_nothing() -> None:
    forest = Forest(FOREST, capacity=4)
    slots = _fill(forest, {"full": 40, "young": 3})
    state = forest.to_state_many(list(slots.values()))
    other = Forest(FOREST, capacity=4)
    with pytest.raises(DetectorError, match="corrupt forest state: left"):
        other.from_state_many({**state, "left": state["left"][:-1]})
    with pytest.raises(StateVersionError, match="version 7"):
        other.from_state_many({**state, "version": 7})
    with pytest.raises(StateVersionError, match="not a forest state"):
        other.from_state_many({**state, "kind": "cutstream.forest"})
    with pytest.raises(DetectorError, match="forest config"):
        Forest(FOREST.model_copy(update={"shingle_size": 2}), capacity=1).from_state_many(state)
    assert other.n_series == 0


MODEL = ModelConfig(
    forest=ForestConfig(
        n_trees=3, sample_size=16, shingle_size=2, seed=7, raw_score="codisp", insert_every=1
    ),
    scoring=ScoringConfig(learning_points=10, learning_ms=0, confidence_points=50.0, seasonal=False),
)
GOLDEN_KEYS = ("full-a", "full-b", "flat", "young")


def _golden_history() -> tuple[list[str], np.ndarray, np.ndarray]:
    """The stream the golden checkpoint's models were made from (see the module docstring)."""
    keys, vals, ts = [], [], []
    for i in range(40):
        for j, k in enumerate(GOLDEN_KEYS):
            if k == "young" and i < 35:
                continue  # 5 points: window not full
            v = (2.0 if i % 3 else 2.5) if k == "flat" else round(np.sin(i / 3.0 + j) * 4, 2)
            keys.append(k)
            vals.append(v)
            ts.append(T0 + i * 60_000)
    return keys, np.array(vals), np.array(ts, dtype=np.int64)


def _golden_future() -> tuple[list[str], np.ndarray, np.ndarray]:
    keys, vals, ts = [], [], []
    for i in range(40, 52):
        for j, k in enumerate(GOLDEN_KEYS):
            if k == "full-a" and i == 45:
                v = 9.0
            else:
                v = 2.0 if k == "flat" else round(np.cos(i / 3.0 + j) * 4, 2)
            keys.append(k)
            vals.append(v)
            ts.append(T0 + i * 60_000)
    return keys, np.array(vals), np.array(ts, dtype=np.int64)


def _assert_same_batch(a: ScoreBatch, b: ScoreBatch) -> None:
    for name in (
        "raw_score",
        "anomaly_score",
        "confidence",
        "processed_points",
        "expected_value",
        "decision",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_a_checkpoint_written_before_the_bulk_format_still_loads_and_its_forests_score_the_same() -> None:
    """Version 1 goes through both mappers (detector/state.py): the forests are kept bit for bit, the
    series' point counts carry on, and the scoring stage (another design then) learns again."""
    ckpt = loads((GOLDEN / "checkpoint_v2_detector_v1.ckpt").read_bytes())
    state = ckpt.detectors["d"]
    assert state["version"] == 1 and list(state["series"]) == list(GOLDEN_KEYS)
    det = Detector(MODEL)
    assert det.from_state(state) == list(GOLDEN_KEYS)
    future = _golden_future()
    out = det.process_many(*future)
    with np.load(GOLDEN / "checkpoint_v2_detector_v1.npz") as z:
        np.testing.assert_array_equal(out.raw_score, z["raw_score"])
        np.testing.assert_array_equal(out.processed_points, z["processed_points"])
    keys = np.array(future[0])
    for k in GOLDEN_KEYS:  # LEARNING again for the scoring stage's 10 points, then judged
        stage = out.inference[keys == k]
        assert not stage[:10].any() and stage[10:].all(), k
    assert out.warm_started[keys == "flat"].all()  # the mark was saved
    # the same models, taken again in the current format, continue identically
    again = Detector(MODEL)
    again.from_state(state)
    bulk = Detector(MODEL)
    bulk.from_state(loads(dumps(Checkpoint("t", 3, 160, detectors={"d": again.to_state()}))).detectors["d"])
    _assert_same_batch(out, bulk.process_many(*future))


def test_the_golden_models_are_the_ones_the_history_makes() -> None:
    """Guards the golden file: its forests equal a fresh run of the stream it names."""
    det = Detector(MODEL)
    det.process_many(*_golden_history())
    golden = Detector(MODEL)
    golden.from_state(loads((GOLDEN / "checkpoint_v2_detector_v1.ckpt").read_bytes()).detectors["d"])
    mine, theirs = det.to_state(list(GOLDEN_KEYS)), golden.to_state(list(GOLDEN_KEYS))
    _assert_states_equal(mine["forest"], theirs["forest"])
    np.testing.assert_array_equal(mine["scores"]["n_seen"], theirs["scores"]["n_seen"])


def test_detector_checkpoint_round_trip_through_the_store(tmp_path: Path) -> None:
    keys, values, ts = _golden_history()
    det = Detector(MODEL)
    det.process_many(keys, values, ts)
    det.process_many(["late"] * 3, np.array([1.0, 1.0, 2.0]), ts[-3:])  # shingle not full yet
    det.from_state(det.to_state(["flat"]), warm_start=True)  # replaces the model, marked warm
    store = CheckpointStore(tmp_path, "g")
    order = ["young", "late", "flat", "full-b", "full-a"]
    store.save(Checkpoint("t", 0, 99, detectors={"d": det.to_state(order)}, series={"d": order}))
    loaded = store.load("t", 0)
    assert loaded is not None and loaded.next_offset == 99
    state = loaded.detectors["d"]
    assert state["version"] == STATE_VERSION and state["keys"] == order
    assert state["forest"]["points"].flags.writeable
    fresh = Detector(MODEL, capacity=1)
    fresh.process_many(["other"], np.array([3.0]), ts[:1])
    assert fresh.from_state(state) == order
    fkeys, fvals, fts = _golden_future()
    fkeys = fkeys + ["late"] * 4
    fvals = np.r_[fvals, [1.0, 5.0, 1.0, 1.0]]
    fts = np.r_[fts, fts[-4:]]
    a, b = det.process_many(fkeys, fvals, fts), fresh.process_many(fkeys, fvals, fts)
    _assert_same_batch(a, b)
    np.testing.assert_array_equal(a.warm_started, b.warm_started)
    assert (
        b.warm_started[np.array(fkeys) == "flat"].all()
        and not b.warm_started[np.array(fkeys) == "young"].any()
    )


def test_a_detector_state_that_does_not_load_leaves_the_current_models() -> None:
    det = Detector(MODEL)
    det.process_many(*_golden_history())
    before = det.to_state(["full-a"])
    bad = {**before, "forest": {**before["forest"], "cut_value": before["forest"]["cut_value"][1:]}}
    with pytest.raises(DetectorError, match="corrupt forest state"):
        det.from_state(bad)
    with pytest.raises(StateVersionError, match="version 99"):
        det.from_state({**before, "version": 99})
    assert sorted(det.keys()) == sorted(GOLDEN_KEYS)
    _assert_states_equal(det.to_state(["full-a"])["forest"], before["forest"])


def test_checkpoint_arrays_are_copies_of_bytes_and_views_of_a_bytearray() -> None:
    state = {"a": np.arange(5, dtype=np.int16), "b": np.ones((2, 3), dtype=np.bool_), "c": np.zeros(0)}
    data = dumps(Checkpoint("t", 1, 2, detectors={"d": state}))
    from_bytes = loads(data).detectors["d"]
    buf = bytearray(data)
    from_buf = loads(buf).detectors["d"]
    for name, value in state.items():
        assert from_bytes[name].dtype == value.dtype and np.array_equal(from_bytes[name], value)
        assert np.array_equal(from_buf[name], value)
        assert from_bytes[name].flags.writeable and from_buf[name].flags.writeable
    assert np.shares_memory(from_buf["a"], np.frombuffer(buf, dtype=np.uint8))
    buf[-1] ^= 0xFF
    with pytest.raises(CheckpointError, match="CRC"):
        loads(buf)


SIM_SCRIPT = """
import sys, numpy as np, warnings
warnings.simplefilter("ignore")
from detector.config import ForestConfig
from detector.forest import Forest
if sys.argv[1] == "codisp":
    config = ForestConfig(n_trees=2, sample_size=6, shingle_size=2, seed=3, raw_score="codisp")
else:  # the default engine in small: the isolation score, trees taking turns (2 classes)
    config = ForestConfig(n_trees=3, sample_size=4, shingle_size=2, seed=3, insert_every=2)
slots = np.array([0, 1, 2, 0, 0, 1, 1, 0, 1] * 3)
vals = np.round(np.sin(np.arange(slots.size)), 1)
vals[::5] = 0.5
sim, cpu = Forest(config, capacity=3, backend="cudasim"), Forest(config, capacity=1)
sim.add_series(3)
sim.update(slots, vals)
state = sim.to_state_many([2, 0, 1])
moved = cpu.from_state_many(state)
back = Forest(config, capacity=1, backend="cudasim")
again = back.from_state_many(cpu.to_state_many(moved))
nxt = np.linspace(-2, 2, 6)
a = sim.update(np.repeat([2, 0, 1], 2), nxt)
b = cpu.update(np.repeat(moved, 2), nxt)
c = back.update(np.repeat(again, 2), nxt)
assert np.array_equal(a.raw_score, b.raw_score) and np.array_equal(a.raw_score, c.raw_score)
assert np.array_equal(a.expected, b.expected) and np.array_equal(a.expected, c.expected)
assert a.raw_score.max() > 0.0
print("SIM-MANY-OK")
"""


@pytest.mark.parametrize("engine", ["codisp", "isolation"])
def test_many_series_state_moves_between_the_cuda_simulator_and_the_cpu(engine: str) -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SIM_SCRIPT, engine], capture_output=True, text=True, env=env, timeout=280
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SIM-MANY-OK" in out.stdout


def _golden_state() -> tuple[dict, dict]:
    """A current detector state of the golden history, and a copy of its scoring columns."""
    keys, values, ts = _golden_history()
    det = Detector(MODEL)
    det.process_many(keys, values, ts)
    state = det.to_state(list(GOLDEN_KEYS))
    return state, dict(state["scores"])


def test_a_detector_state_with_the_version_2_scoring_columns_loads_with_a_fresh_quiet_counter() -> None:
    state, scores = _golden_state()
    assert scores["version"] == 4
    del scores["quiet_n"], scores["ev_day"]  # what version 2 wrote
    old = {**state, "scores": {**scores, "version": 2}}
    restored = Detector(MODEL)
    restored.from_state(old)
    again = restored.to_state(list(GOLDEN_KEYS))
    assert np.array_equal(again["scores"]["quiet_n"], np.zeros(len(GOLDEN_KEYS), dtype=np.int64))
    assert np.array_equal(again["scores"]["n_seen"], state["scores"]["n_seen"])
    del old["scores"]["n_seen"]  # a column missing beyond what the mapper adds is still refused
    with pytest.raises(StateVersionError):
        Detector(MODEL).from_state(old)


def test_a_version_3_scoring_state_keeps_its_models_but_its_day_slots_learn_again() -> None:
    """Version 3's day slots held values, version 4's hold the coarse model's residual (and it
    adds the usual event counts, ``ev_day``)."""
    state, scores = _golden_state()
    del scores["ev_day"]
    slots = ("slot_mean", "slot_dev", "slot_n", "slot_err", "coarse_err")
    scores.update({name: np.ones_like(scores[name]) for name in slots})  # day slots a v3 state filled
    old = {**state, "scores": {**scores, "version": 3}}
    restored = Detector(MODEL)
    restored.from_state(old)
    again = restored.to_state(list(GOLDEN_KEYS))["scores"]
    assert again["version"] == 4
    for name in (*slots, "ev_day"):
        assert not again[name].any(), name
    for name in ("day_mean", "week_mean", "level", "ex_value", "n_model"):
        assert np.array_equal(again[name], scores[name]), name
    del old["scores"]["slot_err"]  # a version 3 state without its slot columns is refused
    with pytest.raises(StateVersionError):
        Detector(MODEL).from_state(old)
