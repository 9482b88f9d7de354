"""The GPU path: the same kernels compiled by numba.cuda must give the CPU's results, bit for bit.

Both GPU drivers are checked: the isolation score (the default engine: six launches a round) and
CoDisp over a sliding window (five). Tests marked ``gpu`` need a CUDA device (skipped elsewhere;
CI has none). The simulator tests run the same GPU kernels through numba's CUDA simulator on the
CPU, in a subprocess (it is switched on by an environment variable read at import), so the GPU
drivers' logic (rounds, launches, reductions, the class of trees a point goes to) is checked
everywhere.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from detector.config import ForestConfig
from detector.forest import Forest, check_state
from tests.conftest import needs_gpu


def _stream(n_series: int, ticks: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(ticks)[:, None]
    vals = 10 * np.sin(2 * np.pi * t / 25 + np.arange(n_series)) + rng.normal(0, 1, (ticks, n_series))
    vals[::7, 0] = 3.0  # a series with many equal points
    slots = np.tile(np.arange(n_series), ticks)
    return slots, vals.ravel()


#: The default engine in small: isolation score, trees taking turns (3 classes), shingles of 2.
ISO = ForestConfig(n_trees=7, sample_size=12, shingle_size=2, seed=5, insert_every=3)


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
    assert gpu._gpu is not None and all(launcher.fast for launcher in gpu._gpu.launchers)
    for s in range(6):
        check_state(gpu.to_state(s))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "config",
    [ISO, ForestConfig(seed=2), ForestConfig(n_trees=50, sample_size=256, shingle_size=4, seed=3)],
    ids=["small", "default", "50x256x4"],
)
def test_gpu_isolation_scores_and_states_are_identical_to_the_cpu_ones(config: ForestConfig) -> None:
    """The default engine on the device: scores, imputations and every state array equal the CPU's,
    through batches where series repeat (rounds) and tick batches (one round), past the point where
    the store is full and points leave."""
    n = 6
    ticks = config.store_size + 60
    slots, vals = _stream(n, ticks)
    cpu, gpu = _both(config, slots, vals, "gpu")
    cut = [0, 3 * n, 3 * n + 40, n * (ticks // 2), n * ticks]
    for lo, hi in itertools.pairwise(cut):
        a, b = cpu.update(slots[lo:hi], vals[lo:hi]), gpu.update(slots[lo:hi], vals[lo:hi])
        assert np.array_equal(a.raw_score, b.raw_score)
        assert np.array_equal(a.expected, b.expected)
    for i in range(20):  # tick by tick: one value per series, the single-round path
        row = np.arange(n)
        a, b = cpu.update(row, vals[i * n : i * n + n]), gpu.update(row, vals[i * n : i * n + n])
        assert np.array_equal(a.raw_score, b.raw_score)
    assert a.raw_score.max() > 0.0
    assert gpu._gpu is not None and all(launcher.fast for launcher in gpu._gpu.launchers)
    sa, sb = cpu.to_state_many(list(range(n))), gpu.to_state_many(list(range(n)))
    for name, value in sa.items():
        assert np.array_equal(np.asarray(value), np.asarray(sb[name])), name
    check_state(gpu.to_state(0))


@pytest.mark.gpu
@needs_gpu
def test_isolation_state_moves_between_gpu_and_cpu_and_back() -> None:
    slots, vals = _stream(4, 80)
    gpu = Forest(ISO, capacity=4, backend="gpu")
    gpu.add_series(4)
    gpu.update(slots, vals)
    cpu = Forest(ISO, capacity=1)
    moved = cpu.from_state_many(gpu.to_state_many([3, 1]))
    back = Forest(ISO, capacity=1, backend="gpu")
    again = back.from_state_many(cpu.to_state_many(moved))
    nxt = np.linspace(-9, 9, 12)
    a = gpu.update(np.repeat([3, 1], 6), nxt)
    b = cpu.update(np.repeat(moved, 6), nxt)
    c = back.update(np.repeat(again, 6), nxt)
    assert np.array_equal(a.raw_score, b.raw_score) and np.array_equal(a.raw_score, c.raw_score)
    assert np.array_equal(a.expected, c.expected)


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


SIM_ISO_SCRIPT = """
import numpy as np, warnings
warnings.simplefilter("ignore")
from detector.config import ForestConfig
from detector.forest import Forest, check_state
# 5 trees in 2 classes (trees 0, 2, 4 and 1, 3), a store of 8 points: points leave after 8.
config = ForestConfig(n_trees=5, sample_size=4, shingle_size=2, seed=3, insert_every=2)
rng = np.random.default_rng(1)
slots = np.array([0, 1, 0, 0, 1, 1, 0, 1, 2] * 4)  # series repeat in the batch: several rounds
vals = np.round(rng.normal(size=slots.size), 1)
vals[::5] = 0.5  # equal points: duplicates share a leaf
cpu, sim = Forest(config, capacity=3), Forest(config, capacity=3, backend="cudasim")
cpu.add_series(3); sim.add_series(3)
a, b = cpu.update(slots, vals), sim.update(slots, vals)
assert np.array_equal(a.raw_score, b.raw_score), (a.raw_score, b.raw_score)
assert np.array_equal(a.expected, b.expected), (a.expected, b.expected)
tick = np.array([2, 0, 1])  # one value per series: one round
a, b = cpu.update(tick, [0.5, 9.0, -0.3]), sim.update(tick, [0.5, 9.0, -0.3])
assert np.array_equal(a.raw_score, b.raw_score), (a.raw_score, b.raw_score)
assert a.raw_score.min() > 0.0 and a.raw_score[1] == a.raw_score.max()  # 9.0 is far off
sa, sb = cpu.to_state_many([0, 1, 2]), sim.to_state_many([0, 1, 2])
for name, value in sa.items():
    assert np.array_equal(np.asarray(value), np.asarray(sb[name])), name
for s in (0, 1, 2):
    check_state(sim.to_state(s))
print("SIM-ISO-OK", int(sa["n_points"].max()))
"""


def _simulate(script: str) -> str:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_gpu_kernels_in_the_cuda_simulator_match_the_cpu() -> None:
    assert "SIM-OK" in _simulate(SIM_SCRIPT)


def test_isolation_gpu_kernels_in_the_cuda_simulator_match_the_cpu() -> None:
    """The default engine's GPU driver: scores, imputations and states equal the CPU's."""
    out = _simulate(SIM_ISO_SCRIPT)
    assert "SIM-ISO-OK" in out
    assert int(out.split()[-1]) > 8  # the store filled and points left
