"""The scoring stage on the GPU: the kernels of detector/scoring_kernels.py compiled by numba.cuda
must give the CPU build's results (detector/scoring_cpu.py) bit for bit: every output of
``prepare`` and ``judge`` and every state array; and the whole step (``Detector.process_slots``:
the passes, the forest between them on the device, the results back) must give the CPU's.

The simulator test runs the CUDA kernels through numba's CUDA simulator in a subprocess (switched
on by an environment variable read at import), so the GPU drivers (one thread per series, a
series' points in input order, the device state) are checked in CI; the ``gpu`` test runs them on
a device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.config import ModelConfig, ScoringConfig
from detector.detector import _params
from detector.normalize import NormalizerState, judge, prepare
from tests.conftest import needs_gpu

ROOT = Path(__file__).resolve().parents[2]
PREPARED = ("z", "expected_x", "scale", "forest_input", "count", "seen", "magnitude")


#: Fields that carry decisions and counts: they must agree exactly on every target.
EXACT = ("decision", "inference", "reason", "processed_points", "count", "seen")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference, relative to the CPU's value (absolute where that is below 1)."""
    if a.dtype.kind != "f":
        return 0.0 if np.array_equal(a, b) else float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0), initial=0.0))


def compare(backend: str, n_series: int, steps: int, seed: int = 1) -> dict[str, Any]:
    """Feed the same batches to the CPU's scoring stage and ``backend``'s: the fields that differ
    anywhere, the largest relative difference of each, and how many decisions there were.

    Batches alternate between one point per series and several per series (a series' points in
    time order), with spikes, missing windows, averages' event counts and forest scores.
    """
    params = _params(ModelConfig(scoring=ScoringConfig(learning_points=20, learning_ms=0)))
    rng = np.random.default_rng(seed)
    cpu, other = NormalizerState(n_series), NormalizerState(n_series, backend=backend)
    t0 = 1_767_225_600_000
    rel: dict[str, float] = {}
    decisions = inference = 0

    def seen(name: str, a: np.ndarray, b: np.ndarray) -> None:
        rel[name] = max(rel.get(name, 0.0), _rel(np.asarray(a), np.asarray(b)))

    for step in range(steps):
        order = rng.permutation(n_series)
        slots = np.repeat(order, 3) if step % 2 else order
        n = slots.shape[0]
        ts = np.sort(t0 + (step * 10 + rng.integers(0, 10, n)) * 300_000)
        vals = 10 + 5 * np.sin(ts / 3.6e6) + rng.standard_normal(n) * (1 + 40 * (rng.random(n) < 0.03))
        events = rng.integers(0, 30, n).astype(float)
        missing = rng.random(n) < 0.05
        pa = prepare(cpu, params, slots, vals, ts, events)
        pb = prepare(other, params, slots, vals, ts, events)
        raw = np.abs(rng.standard_normal(n)) + 0.5 + 5 * (rng.random(n) < 0.05)
        ja = judge(cpu, params, slots, raw, pa, vals, ts, missing)
        jb = judge(other, params, slots, raw, pb, vals, ts, missing)
        for f in PREPARED:
            seen(f, getattr(pa, f), other.backend.to_numpy(getattr(pb, f)))
        for f in ja.__dataclass_fields__:
            seen(f, getattr(ja, f), getattr(jb, f))
        decisions += int(ja.decision.sum())
        inference += int(ja.inference.sum())
    all_slots = np.arange(n_series)
    a, b = cpu.columns(all_slots), other.columns(all_slots)
    for k in a:
        seen(f"state.{k}", a[k], b[k])
    differ = sorted(k for k, v in rel.items() if v != 0.0)
    return {"differ": differ, "max_rel": rel, "decisions": decisions, "inference": inference}


def compare_detector(backend: str, n_series: int, steps: int, seed: int = 2) -> dict[str, Any]:
    """Feed the same steps to a CPU ``Detector`` and one on ``backend``: as :func:`compare`, over
    every field of the results (``ScoreBatch``), and whether the device launches skipped numba's
    argument preparation. Steps alternate between one point per series (the worker's step: the
    forest's input and score stay on the device) and three per series (replay: rounds)."""
    from detector.config import ForestConfig
    from detector.detector import Detector

    config = ModelConfig(
        forest=ForestConfig(n_trees=5, sample_size=8, shingle_size=2, insert_every=2, seed=4),
        scoring=ScoringConfig(learning_points=20, learning_ms=0),
    )
    cpu, other = Detector(config), Detector(config, backend=backend)
    keys = [f"host-{i}" for i in range(n_series)]
    rng = np.random.default_rng(seed)
    rel: dict[str, float] = {}
    decisions = 0
    t0 = 1_767_225_600_000
    for step in range(steps):
        order = rng.permutation(n_series)
        idx = np.repeat(order, 3) if step % 3 == 2 else order
        n = idx.shape[0]
        ts = t0 + (step * 3 + (np.arange(n) // n_series if step % 3 == 2 else 0)) * 300_000
        ts = np.sort(ts) if step % 3 == 2 else np.full(n, t0 + step * 3 * 300_000)
        vals = 10 + 5 * np.sin(ts / 3.6e6) + rng.standard_normal(n) * (1 + 40 * (rng.random(n) < 0.03))
        missing = rng.random(n) < 0.05
        batch = [keys[i] for i in idx.tolist()]
        a = cpu.process_many(batch, vals, ts, missing)
        b = other.process_many(batch, vals, ts, missing)
        for f in a.__dataclass_fields__:
            rel[f] = max(rel.get(f, 0.0), _rel(getattr(a, f), getattr(b, f)))
        decisions += int(a.decision.sum())
    from detector import scoring_cuda

    fast = [launcher.fast for launcher in scoring_cuda._launchers()]
    forest = other._forest._gpu
    if forest is not None:  # the forest's own kernels, through the same launcher
        fast += [launcher.fast for launcher in forest.launchers]
    differ = sorted(k for k, v in rel.items() if v != 0.0)
    return {"differ": differ, "max_rel": rel, "decisions": decisions, "fast_launch": fast}


SIM_DETECTOR_SCRIPT = """
import json, warnings
warnings.simplefilter("ignore")
from tests.unit.test_scoring_gpu import compare_detector
print("SIM-DETECTOR", json.dumps(compare_detector("cudasim", 3, 60)))
"""


def test_the_whole_step_in_the_cuda_simulator_matches_the_cpu_bit_for_bit() -> None:
    """``Detector.process_many`` with the forest and the scoring stage in numba's CUDA simulator:
    every result field equals the CPU's, over steps of one point per series and of several."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SIM_DETECTOR_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("SIM-DETECTOR", 1)[1])
    assert result["differ"] == [], result["max_rel"]
    assert result["decisions"] > 0
    assert not any(result["fast_launch"])  # the simulator keeps numba's own launch


SIM_SCRIPT = """
import json, warnings
warnings.simplefilter("ignore")
from tests.unit.test_scoring_gpu import compare
print("SIM-SCORING", json.dumps(compare("cudasim", 4, 120)))
"""


def test_the_scoring_kernels_in_the_cuda_simulator_match_the_cpu_bit_for_bit() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SIM_SCRIPT], capture_output=True, text=True, env=env, timeout=280, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("SIM-SCORING", 1)[1])
    assert result["differ"] == []
    assert result["decisions"] > 0 and result["inference"] > 0  # the judged branches were reached


@pytest.mark.gpu
@needs_gpu
def test_the_scoring_kernels_on_a_gpu_decide_as_the_cpu_and_differ_only_in_the_last_bits() -> None:
    """On a device the compiled code is not the CPU's bit for bit: NVVM fuses multiply-adds (numba-cuda
    0.30 has no switch for it) and libdevice's log/erfc/expm1 round differently from glibc. Measured
    on an H200 (docs/ARCHITECTURE.md): the decisions, stages, reasons and counts are the same; the
    scores and bands differ by at most a few 1e-12 relative."""
    result = compare("gpu", 500, 300)
    assert result["decisions"] > 0
    rel = result["max_rel"]
    assert all(rel[f] == 0.0 for f in EXACT if f in rel), rel
    # float32 state (the profiles, the tails) may round to the neighbouring float32
    assert all(v < (1e-6 if f.startswith("state.") else 1e-9) for f, v in rel.items()), rel
    print("GPU-SCORING", json.dumps(result))


@pytest.mark.gpu
@needs_gpu
def test_the_whole_step_on_a_gpu_decides_as_the_cpu_with_the_fast_launches() -> None:
    """The whole step on a device (the forest's input and score kept there, the results back in
    one copy): decisions, stages, reasons and counts as the CPU's; the continuous outputs within
    the last bits (as above); and the scoring kernels and the forest's launched without numba's
    per-argument work."""
    result = compare_detector("gpu", 300, 90)
    assert result["decisions"] > 0
    rel = result["max_rel"]
    exact = ("decision", "inference", "reason", "processed_points", "missing", "warm_started")
    assert all(rel[f] == 0.0 for f in exact), rel
    assert rel["raw_score"] == 0.0, rel  # the forest is the CPU's bit for bit
    assert all(v < 1e-9 for v in rel.values()), rel
    assert result["fast_launch"] == [True] * (2 + 6)  # prepare, judge; the forest's six
    print("GPU-DETECTOR", json.dumps(result))
