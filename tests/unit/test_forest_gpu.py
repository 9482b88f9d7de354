"""The GPU path: the same kernels compiled by numba.cuda must give the CPU's results.

Tests marked ``gpu`` need a CUDA device (skipped elsewhere; CI has none). The simulator test runs
the same GPU kernels through numba's CUDA simulator on the CPU, so the GPU driver's logic
(rounds, the five launches, the reductions) is checked everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from detector.backend import get_backend
from detector.config import ForestConfig
from detector.errors import BackendUnavailable
from detector.forest import Forest, check_state


def _gpu_usable() -> bool:
    try:
        get_backend("gpu")
    except BackendUnavailable:
        return False
    return True


needs_gpu = pytest.mark.skipif(not _gpu_usable(), reason="no usable CUDA GPU here")


def _stream(n_series: int, ticks: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(ticks)[:, None]
    vals = 10 * np.sin(2 * np.pi * t / 25 + np.arange(n_series)) + rng.normal(0, 1, (ticks, n_series))
    vals[::7, 0] = 3.0  # a series with many equal points
    slots = np.tile(np.arange(n_series), ticks)
    return slots, vals.ravel()


def _both(config: ForestConfig, slots: np.ndarray, vals: np.ndarray, backend: str) -> tuple[Forest, Forest]:
    cpu, other = Forest(config, capacity=4), Forest(config, capacity=4, backend=backend)
    n = int(slots.max()) + 1
    cpu.add_series(n)
    other.add_series(n)
    return cpu, other


@pytest.mark.gpu
@needs_gpu
def test_gpu_scores_are_identical_to_the_cpu_ones() -> None:
    config = ForestConfig(
        n_trees=20, sample_size=32, shingle_size=3, seed=9, raw_score="codisp", insert_every=1
    )
    slots, vals = _stream(6, 120)
    # Batches where a series repeats (several rounds on the GPU) and batches where it does not.
    cpu, gpu = _both(config, slots, vals, "gpu")
    for chunk in (slice(0, 300), slice(300, 306 * 2), slice(612, None)):
        a, b = cpu.update(slots[chunk], vals[chunk]), gpu.update(slots[chunk], vals[chunk])
        assert np.array_equal(a.raw_score, b.raw_score)
        assert np.array_equal(a.expected, b.expected)
    for s in range(6):
        check_state(gpu.to_state(s))


@pytest.mark.gpu
@needs_gpu
def test_state_moves_between_gpu_and_cpu() -> None:
    config = ForestConfig(
        n_trees=5, sample_size=16, shingle_size=2, seed=1, raw_score="codisp", insert_every=1
    )
    slots, vals = _stream(2, 60)
    gpu = Forest(config, capacity=2, backend="gpu")
    gpu.add_series(2)
    gpu.update(slots, vals)
    cpu = Forest(config, capacity=2)
    moved = cpu.from_state(gpu.to_state(1))
    nxt = np.linspace(-5, 5, 10)
    a = gpu.update(np.full(10, 1), nxt)
    b = cpu.update(np.full(10, moved), nxt)
    assert np.array_equal(a.raw_score, b.raw_score)


@pytest.mark.gpu
@needs_gpu
def test_many_series_state_moves_between_gpu_and_cpu_and_back() -> None:
    config = ForestConfig(
        n_trees=7, sample_size=24, shingle_size=3, seed=4, raw_score="codisp", insert_every=1
    )
    slots, vals = _stream(5, 90)
    gpu = Forest(config, capacity=5, backend="gpu")
    gpu.add_series(5)
    gpu.update(slots, vals)
    cpu = Forest(config, capacity=2)
    moved = cpu.from_state_many(gpu.to_state_many([4, 0, 2]))
    back = Forest(config, capacity=1, backend="gpu")
    again = back.from_state_many(cpu.to_state_many(moved))
    nxt = np.linspace(-5, 5, 12)
    a = gpu.update(np.repeat([4, 0, 2], 4), nxt)
    b = cpu.update(np.repeat(moved, 4), nxt)
    c = back.update(np.repeat(again, 4), nxt)
    assert np.array_equal(a.raw_score, b.raw_score) and np.array_equal(a.raw_score, c.raw_score)
    assert np.array_equal(a.expected, c.expected)


SIM_SCRIPT = """
import numpy as np, warnings
warnings.simplefilter("ignore")
from detector.config import ForestConfig
from detector.forest import Forest, check_state
config = ForestConfig(n_trees=2, sample_size=6, shingle_size=2, seed=3, raw_score="codisp", insert_every=1)
rng = np.random.default_rng(1)
slots = np.array([0, 1, 0, 0, 1, 1, 0, 1] * 3)
vals = np.round(rng.normal(size=slots.size), 1)
vals[::5] = 0.5
cpu, sim = Forest(config, capacity=2), Forest(config, capacity=2, backend="cudasim")
cpu.add_series(2); sim.add_series(2)
a, b = cpu.update(slots, vals), sim.update(slots, vals)
assert np.array_equal(a.raw_score, b.raw_score), (a.raw_score, b.raw_score)
assert np.array_equal(a.expected, b.expected)
for s in (0, 1):
    check_state(sim.to_state(s))
print("SIM-OK", a.raw_score.max())
"""


@pytest.mark.slow
def test_gpu_kernels_in_the_cuda_simulator_match_the_cpu() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SIM_SCRIPT], capture_output=True, text=True, env=env, timeout=280
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SIM-OK" in out.stdout
