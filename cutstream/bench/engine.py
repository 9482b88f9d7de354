"""`cutstream bench engine`: throughput, latency and memory of the batched forest (and references).

``cutstream bench engine --series S --points P ...`` prints one JSON line: the forest alone, tick
by tick, at the product's default model (``ForestConfig()``) unless options change it; with
``--pipeline`` also the whole scoring path (series to slots, the scoring stage around the forest,
the forest: ``Detector.process_slots`` as the pipeline drives it), at the same S and model in the
same process, timed in turns with the forest alone (``--rounds`` blocks each, medians), where the
time goes inside it, and the ratio to the forest alone.
``markdown_report`` runs, in one process: the default model and the whole path at S=1000; the
engine at T=50, N=256, K=4 tick by tick next to krcf single-series (its best case) and on 1000
interleaved series, rrcf on a short stream; single-series latency, bytes per series and the time
to create 100,000 series; and the ratios.

Every stream is synthetic and seasonal: a sine of period 50 with per-series phase and amplitude,
plus Gaussian noise, seeded.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
import warnings
from typing import Any

import click
import numpy as np


def seasonal(n_series: int, n_points: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """float64[n_points, n_series]: seasonal series (period 50) with noise, one column each."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_points)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n_series)[None, :]
    amp = rng.uniform(5, 20, n_series)[None, :]
    level = rng.uniform(-100, 100, n_series)[None, :]
    return level + amp * np.sin(2 * np.pi * t / 50 + phase) + rng.normal(0, 1, (n_points, n_series))


def forest_config(
    trees: int | None = None,
    sample_size: int | None = None,
    shingle: int | None = None,
    insert_every: int | None = None,
    raw_score: str | None = None,
    seed: int = 0,
) -> Any:
    """The product's default forest (``ForestConfig()``) with the given settings changed.

    Built from the fields given, so ``insert_every`` follows ForestConfig's own rule when not
    given (10, fewer for a small forest, 1 for codisp).
    """
    from detector.config import ForestConfig

    given = {"n_trees": trees, "sample_size": sample_size, "shingle_size": shingle}
    given |= {"insert_every": insert_every, "raw_score": raw_score}
    return ForestConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})


def _warmup_ticks(cfg: Any, warmup: int | None) -> int:
    """Ticks before timing: by default until the store is full (points leave: the steady state)."""
    return int(cfg.store_size + cfg.shingle_size) if warmup is None else warmup


class _Subject:
    """A warmed-up bench subject: ``block(start, count)`` runs timed ticks ``start..start+count-1``
    (of those made for it) and returns (wall, CPU) seconds; ``info`` holds its static fields."""

    def __init__(self, info: dict[str, Any], tick: Any, blocks: Any = contextlib.nullcontext) -> None:
        self.info = info
        self._tick = tick
        self._blocks = blocks
        self.walls: list[float] = []

    def block(self, start: int, count: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with self._blocks():
            for i in range(start, start + count):
                self._tick(i)
        wall = time.perf_counter() - t0
        self.walls.append(wall)
        return wall, time.process_time() - c0


def _forest_subject(series: int, ticks: int, cfg: Any, backend: str, warmup: int | None) -> _Subject:
    """The forest alone (``Forest.update``), warmed up, with ``ticks`` timed ticks' input made."""
    from detector.forest import Forest

    warm = _warmup_ticks(cfg, warmup)
    data = seasonal(series, warm + ticks, cfg.seed)
    t0 = time.perf_counter()
    forest = Forest(cfg, capacity=series, backend=backend)
    slots = forest.add_series(series)
    create_s = time.perf_counter() - t0
    for i in range(warm):  # the first tick also compiles / loads the kernels
        forest.update(slots, data[i])
    scores: list[Any] = []

    def tick(i: int) -> None:
        scores.append(forest.update(slots, data[warm + i]).raw_score)

    info = {
        "backend": forest.backend,
        "warmup_ticks": warm,
        "bytes_per_series": forest.bytes_per_series,
        "create_s": create_s,
        "scores": scores,
    }
    return _Subject(info, tick)


def bench_engine(
    series: int, points: int, cfg: Any = None, backend: str = "cpu", warmup: int | None = None
) -> dict[str, Any]:
    """Time our forest tick by tick: each step is one value for every series.

    ``cfg`` is a ForestConfig (default: the product's, ``ForestConfig()``). The first ``warmup``
    ticks (default: enough to fill the store, so points leave) are not timed, so the figure is
    the steady state (score + delete + insert).
    """
    cfg = forest_config() if cfg is None else cfg
    subject = _forest_subject(series, points, cfg, backend, warmup)
    wall, cpu = subject.block(0, points)
    return _engine_result(series, points, cfg, subject, wall, cpu)


def _engine_result(
    series: int, points: int, cfg: Any, subject: _Subject, wall: float, cpu: float
) -> dict[str, Any]:
    info = dict(subject.info)
    sc = np.concatenate(info.pop("scores"))
    return {
        "bench": "engine",
        "backend": info.pop("backend"),
        "series": series,
        "points": points,
        **_model_fields(cfg),
        **info,
        "points_per_s": series * points / wall,
        "cpu_s": cpu,
        "wall_s": wall,
        "score_quantiles": {str(q): float(np.quantile(sc, q)) for q in (0.1, 0.5, 0.9, 0.99)},
    }


def _model_fields(cfg: Any) -> dict[str, Any]:
    return {
        "trees": cfg.n_trees,
        "sample_size": cfg.sample_size,
        "shingle": cfg.shingle_size,
        "insert_every": cfg.insert_every,
        "raw_score": cfg.raw_score,
    }


#: Event time of the first tick of the scoring path's bench; ticks are 5-minute windows, so the scoring
#: stage leaves LEARNING after a day of them (288 ticks).
_T0_MS = 1_767_225_600_000
_TICK_MS = 300_000

#: The scoring path's steps timed inside it (its report's ``*_s`` fields).
_STEPS = ("keys", "prepare", "forest", "judge")


def _pipeline_subject(series: int, ticks: int, cfg: Any, backend: str, warmup: int | None) -> _Subject:
    """The whole scoring path, warmed up, with ``ticks`` timed ticks' input made.

    Same input and defaults as :func:`bench_engine`; every tick is one step with one value per
    series, driven as ``DetectorPipeline.score`` drives it: the series' registry indices to slots
    (a ``SlotMap``: the keys, timeseriesId-like strings, are looked up only for new series), then
    ``Detector.process_slots``. Inside the timed blocks the steps are timed too (``info["spent"]``:
    ``keys``, indices to slots; ``prepare``; the forest; ``judge``), so ``forest_s`` is the
    forest's share of the same calls on the same state.
    """
    import detector.detector as det_mod
    from cutstream.bench.clock import timed
    from detector.config import ModelConfig

    warm = _warmup_ticks(cfg, warmup)
    data = seasonal(series, warm + ticks, cfg.seed)
    keys = [f"{i:064x}" for i in range(series)]  # hex SHA-256 lengths, as timeseriesId
    det = det_mod.Detector(ModelConfig(forest=cfg), backend=backend, capacity=series)

    ids = np.arange(series, dtype=np.int64)  # the registry's series indices, as the pipeline has them
    slot_map = det_mod.SlotMap(det)

    def names(at: np.ndarray) -> list[str]:
        return [keys[j] for j in at.tolist()]

    def stamps(i: int) -> np.ndarray:
        return np.full(series, _T0_MS + i * _TICK_MS, dtype=np.int64)

    def step(i: int, ts: np.ndarray) -> Any:
        # as DetectorPipeline.score: series ids -> slots (a dict lookup only for new ones), then
        # the scoring step on the slots
        slots = slot_map.slots(ids, names)
        return det.process_slots(slots, data[i], ts)

    for i in range(warm):
        step(i, stamps(i))
    times = [stamps(warm + i) for i in range(ticks)]  # the input, made before the clock starts
    spent = dict.fromkeys(_STEPS, 0.0)
    inference = [0]

    def tick(i: int) -> None:
        inference[0] += int(np.count_nonzero(step(warm + i, times[i]).inference))

    @contextlib.contextmanager
    def instrumented() -> Any:
        # The bench's own instrumentation: the detector's steps wrapped for the timed ticks only.
        patched = {"prepare": det_mod.prepare, "judge": det_mod.judge}
        det_mod.prepare = timed(spent, "prepare", det_mod.prepare)
        det_mod.judge = timed(spent, "judge", det_mod.judge)
        slot_map.slots = timed(spent, "keys", slot_map.slots)  # type: ignore[method-assign]
        det._forest.update = timed(spent, "forest", det._forest.update)  # type: ignore[method-assign]
        try:
            yield
        finally:
            det_mod.prepare, det_mod.judge = patched["prepare"], patched["judge"]
            del slot_map.slots, det._forest.update  # the instance attributes: the class's again

    return _Subject({"warmup_ticks": warm, "spent": spent, "inference": inference}, tick, instrumented)


def _pipeline_result(series: int, points: int, cfg: Any, backend: str, subject: _Subject) -> dict[str, Any]:
    """The scoring path's report over all of ``subject``'s timed blocks (``points`` ticks each):
    points/s is the median block's; the step seconds are the sums over the blocks."""
    wall = sum(subject.walls)
    spent = subject.info["spent"]
    return {
        "bench": "pipeline",
        "backend": backend,
        "series": series,
        "points": points,
        **_model_fields(cfg),
        "warmup_ticks": subject.info["warmup_ticks"],
        "points_per_s": series * points / float(np.median(subject.walls)),
        "wall_s": wall,
        **{f"{name}_s": spent[name] for name in _STEPS},
        "other_s": wall - sum(spent.values()),
        "inference_fraction": subject.info["inference"][0] / (series * points * len(subject.walls)),
    }


def bench_side_by_side(
    series: int,
    points: int,
    cfg: Any,
    backend: str,
    warmup: int | None,
    pipeline_warmup: int | None,
    rounds: int,
) -> dict[str, Any]:
    """The forest alone and the whole scoring path, both warmed up, then timed in turns: ``rounds``
    blocks of ``points`` ticks each, forest then path, so drift in the machine (clocks, heat, other
    jobs) falls on both alike. Each side's points/s is its median block's; the engine's result with
    the path's under ``pipeline`` and the ratio of the two medians."""
    ticks = points * rounds
    forest = _forest_subject(series, ticks, cfg, backend, warmup)
    pipe = _pipeline_subject(series, ticks, cfg, backend, pipeline_warmup)
    cpu = 0.0
    for r in range(rounds):
        cpu += forest.block(r * points, points)[1]
        pipe.block(r * points, points)
    out = _engine_result(series, points, cfg, forest, float(np.median(forest.walls)), cpu / rounds)
    out["pipeline"] = _pipeline_result(series, points, cfg, backend, pipe)
    out["forest_over_pipeline"] = out["points_per_s"] / out["pipeline"]["points_per_s"]
    out["rounds"] = rounds
    out["rounds_points_per_s"] = {
        name: [series * points / w for w in subject.walls]
        for name, subject in (("forest", forest), ("pipeline", pipe))
    }
    return out


def bench_latency(
    trees: int = 50, sample_size: int = 256, shingle: int = 4, points: int = 300
) -> dict[str, Any]:
    """Single series, one value per call: the latency of ``Forest.update`` per point."""
    from detector.config import ForestConfig
    from detector.forest import Forest

    forest = Forest(ForestConfig(n_trees=trees, sample_size=sample_size, shingle_size=shingle), capacity=1)
    slot = forest.add_series(1)
    data = seasonal(1, sample_size + shingle + points)[:, 0]
    for x in data[: sample_size + shingle]:
        forest.update(slot, np.array([x]))
    lat = []
    for x in data[sample_size + shingle :]:
        t0 = time.perf_counter()
        forest.update(slot, np.array([x]))
        lat.append(time.perf_counter() - t0)
    ms = np.array(lat) * 1e3
    return {"latency_ms_p50": float(np.median(ms)), "latency_ms_p99": float(np.quantile(ms, 0.99))}


def bench_create(series: int = 100_000) -> dict[str, Any]:
    """Seconds to allocate a forest and add ``series`` series (T=50, N=256, K=4)."""
    from detector.config import ForestConfig
    from detector.forest import Forest

    t0 = time.perf_counter()
    forest = Forest(ForestConfig(n_trees=50, sample_size=256, shingle_size=4), capacity=series)
    forest.add_series(series)
    dt = time.perf_counter() - t0
    del forest
    gc.collect()
    return {"create_series": series, "create_s": dt}


def _krcf_forest(seed: int, trees: int, sample_size: int, shingle: int) -> Any:
    from krcf import RandomCutForest

    return RandomCutForest(
        {
            "dimensions": 1,
            "shingle_size": shingle,
            "num_trees": trees,
            "sample_size": sample_size,
            "random_seed": seed,
            "internal_shingling": True,
            "output_after": 1,
            "parallel_execution_enabled": False,
        }
    )


def bench_krcf(
    series: int, points: int, warmup: int, trees: int = 50, sample_size: int = 256, shingle: int = 4
) -> dict[str, Any]:
    """krcf 0.4.0 (AWS RCF in Rust), score + update per point; ``series`` forests interleaved."""
    import resource

    data = seasonal(series, warmup + points, 1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    forests = [_krcf_forest(i, trees, sample_size, shingle) for i in range(series)]
    for i in range(warmup):
        for s, f in enumerate(forests):
            x = [data[i, s]]
            f.score(x)
            f.update(x)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + points):
        for s, f in enumerate(forests):
            x = [data[i, s]]
            f.score(x)
            f.update(x)
    wall = time.perf_counter() - t0
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0  # peak growth: a lower bound
    return {
        "series": series,
        "points": points,
        "points_per_s": series * points / wall,
        "rss_bytes_per_series": grown_kb * 1024 // series,
    }


def bench_rrcf(points: int, trees: int, sample_size: int, shingle: int) -> dict[str, Any]:
    """rrcf 0.4.4 (pure Python), its streaming example: forget, insert, CoDisp in every tree."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import rrcf
    data = seasonal(1, sample_size + shingle + points, 2)[:, 0]
    forest = [rrcf.RCTree(random_state=i) for i in range(trees)]
    pts = np.lib.stride_tricks.sliding_window_view(data, shingle)
    t0 = None
    for idx, p in enumerate(pts):
        if idx == sample_size:
            t0 = time.perf_counter()
        for tree in forest:
            if len(tree.leaves) >= sample_size:
                tree.forget_point(idx - sample_size)
            tree.insert_point(p, index=idx)
            tree.codisp(idx)
    timed = len(pts) - sample_size
    wall = time.perf_counter() - t0 if t0 is not None else float("nan")
    return {"points": timed, "points_per_s": timed / wall}


def bench_walk_floor(
    series: int, ticks: int, trees: int = 50, sample_size: int = 256, shingle: int = 4
) -> dict[str, Any]:
    """The memory traffic of a step alone: the delete and insert paths of every tree, walked.

    Builds a steady-state forest, then times ``kernels_cpu.prewalk`` (both paths of all trees of
    a series in lockstep, with prefetch, nothing computed or written) over every series, per tick.
    A step cannot run faster than this; the gap to the real step is the work done per level.
    """
    import numba

    from detector import kernels_cpu
    from detector.config import ForestConfig
    from detector.forest import Forest

    @numba.njit(parallel=True, nogil=True)
    def walks(n, T, K, bo, n16, u16, f32, box, pts, newpt, root, npts, N):  # type: ignore[no-untyped-def]
        tot = 0
        for si in numba.prange(n):
            refs = np.empty(2 * T, np.int64)
            for d in range(K):  # a point of the store stands in for the next one
                newpt[si, d] = pts[si, (npts[si] - 1) % N, d]
            tot += kernels_cpu.prewalk(si, T, npts[si] % N, K, bo, n16, u16, f32, box, pts, newpt, root, refs)
        return tot

    cfg = ForestConfig(n_trees=trees, sample_size=sample_size, shingle_size=shingle, seed=0)
    forest = Forest(cfg, capacity=series)
    slots = forest.add_series(series)
    data = seasonal(series, sample_size + shingle, 0)
    for row in data:
        forest.update(slots, row)
    a, v = forest._a, forest._v
    args = (series, trees, shingle, forest._bo, v["n16"], v["u16"], v["f32"], v["box"])
    args2 = (a["points"], a["newpt"], a["root"], a["n_points"], sample_size)
    walks(*args, *args2)
    t0 = time.perf_counter()
    for _ in range(ticks):
        walks(*args, *args2)
    return {"points_per_s": series * ticks / (time.perf_counter() - t0)}


def compare_backends(series: int, ticks: int, cfg: Any = None, batch: int = 1) -> dict[str, Any]:
    """Score the same seasonal input (with injected spikes) on the CPU and the GPU; compare.

    ``cfg``: a ForestConfig (default: the product's with seed 7). ``batch`` ticks go in one
    ``update`` (series repeat in it: the GPU runs them in rounds). Returns the fraction of
    bit-identical raw scores and imputations, the largest difference, both sets of quantiles
    and the two-sample Kolmogorov-Smirnov statistic over the scores after the store filled.
    """
    from scipy import stats

    from detector.forest import Forest

    cfg = forest_config(seed=7) if cfg is None else cfg
    data = seasonal(series, ticks, 3)
    rng = np.random.default_rng(4)
    spikes = rng.random(data.shape) < 0.01
    data[spikes] += rng.choice([-1, 1], spikes.sum()) * rng.uniform(20, 60, spikes.sum())
    score, expected, seconds = {}, {}, {}
    for backend in ("cpu", "gpu"):
        forest = Forest(cfg, capacity=series, backend=backend)
        slots = forest.add_series(series)
        rows = np.tile(slots, batch)
        s, e = [], []
        t0 = time.perf_counter()
        for i in range(0, ticks, batch):
            out = forest.update(rows[: data[i : i + batch].size], data[i : i + batch].ravel())
            s.append(out.raw_score)
            e.append(out.expected)
        seconds[backend] = time.perf_counter() - t0
        score[backend], expected[backend] = np.concatenate(s), np.concatenate(e)
    filled = series * min(cfg.store_size, ticks)
    a, b = score["cpu"][filled:], score["gpu"][filled:]
    qs = (0.5, 0.9, 0.99, 0.999)
    return {
        "series": series,
        "ticks": ticks,
        "batch": batch,
        **_model_fields(cfg),
        "identical_fraction": float(np.mean(score["cpu"] == score["gpu"])),
        "identical_expected_fraction": float(np.mean(expected["cpu"] == expected["gpu"])),
        "max_abs_diff": float(np.max(np.abs(score["cpu"] - score["gpu"]))),
        "cpu_quantiles": [float(np.quantile(a, q)) for q in qs] if a.size else [],
        "gpu_quantiles": [float(np.quantile(b, q)) for q in qs] if b.size else [],
        "ks_statistic": float(stats.ks_2samp(a, b).statistic) if a.size else float("nan"),
        "seconds": seconds,
    }


@click.command("engine")
@click.option("--series", type=int, default=1000, show_default=True, help="series advanced per tick")
@click.option("--points", type=int, default=100, show_default=True, help="timed ticks (after the warm-up)")
@click.option("--trees", type=int, default=None, help="[default: the product's, ForestConfig()]")
@click.option("--sample-size", type=int, default=None, help="[default: the product's]")
@click.option("--shingle", type=int, default=None, help="[default: the product's]")
@click.option("--insert-every", type=int, default=None, help="[default: ForestConfig's rule]")
@click.option("--raw-score", type=click.Choice(["isolation", "codisp"]), default=None)
@click.option("--backend", type=click.Choice(["cpu", "gpu", "auto"]), default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--warmup", type=int, default=None, help="untimed ticks first (default: fill the store)")
@click.option(
    "--pipeline",
    is_flag=True,
    help="also time the whole scoring path (Detector.process_slots, as the pipeline drives it) at the "
    "same S and model",
)
@click.option(
    "--pipeline-warmup",
    type=int,
    default=None,
    help="untimed scoring-path ticks first (default: as --warmup; a day of 5-minute windows, 288, "
    "ends LEARNING)",
)
@click.option(
    "--rounds",
    type=int,
    default=3,
    show_default=True,
    help="with --pipeline: timed blocks of --points ticks, forest and path in turns (medians reported)",
)
def engine_command(
    series: int,
    points: int,
    trees: int | None,
    sample_size: int | None,
    shingle: int | None,
    insert_every: int | None,
    raw_score: str | None,
    backend: str,
    seed: int,
    warmup: int | None,
    pipeline: bool,
    pipeline_warmup: int | None,
    rounds: int,
) -> None:
    """Throughput of the batched forest on synthetic seasonal series (one JSON line)."""
    cfg = forest_config(trees, sample_size, shingle, insert_every, raw_score, seed)
    if pipeline:
        path_warmup = warmup if pipeline_warmup is None else pipeline_warmup
        out = bench_side_by_side(series, points, cfg, backend, warmup, path_warmup, max(1, rounds))
    else:
        out = bench_engine(series, points, cfg, backend, warmup)
    click.echo(json.dumps(out))


COMMANDS = [engine_command]


def markdown_report(quick: bool) -> str:
    """Run the engine benchmarks in one process and return the BENCHMARKS.md block."""
    import numba

    ticks = 20 if quick else 100
    default = bench_side_by_side(1000, ticks, forest_config(), "cpu", None, None, rounds=3)
    pipe = default["pipeline"]
    ours = bench_engine(1000, ticks, forest_config(50, 256, 4))
    single = bench_krcf(1, 500 if quick else 3000, 300 if quick else 2000)
    many = bench_krcf(1000, 2 if quick else 5, 260)
    rr = bench_rrcf(10 if quick else 50, 50, 256, 4)
    lat = bench_latency(points=100 if quick else 300)
    create = bench_create(100_000)
    floor = bench_walk_floor(1000, ticks)
    r1 = ours["points_per_s"] / single["points_per_s"]
    r2 = ours["points_per_s"] / many["points_per_s"]
    r3 = ours["points_per_s"] / rr["points_per_s"]
    threads = numba.get_num_threads()
    d = default
    model = (
        f"{d['trees']} trees × {d['sample_size']} points, every {d['insert_every']}, shingle {d['shingle']}"
    )
    spent = ", ".join(
        f"{k} {pipe[f'{k}_s'] / pipe['wall_s']:.0%}" for k in ("keys", "prepare", "forest", "judge")
    )
    rows = [
        (
            f"cutstream engine, S=1000 tick by tick (numba, {threads} threads)",
            f"{ours['points_per_s']:,.0f}",
            "1.00",
        ),
        ("krcf 0.4.0, one series (its best case)", f"{single['points_per_s']:,.0f}", f"{r1:.2f}"),
        ("krcf 0.4.0, 1000 interleaved series", f"{many['points_per_s']:,.0f}", f"{r2:.2f}"),
        ("rrcf 0.4.4, one series", f"{rr['points_per_s']:,.1f}", f"{r3:,.0f}"),
    ]
    out = [
        f"Product default model ({model}, the isolation score; `ForestConfig()`), S=1000 tick by tick "
        f"after the store filled ({d['warmup_ticks']:,} ticks), numba {threads} threads: "
        f"`cutstream bench engine --pipeline` (the two timed in turns, {ticks} ticks a block, each "
        "figure its median block's of 3).",
        "",
        "| path | points/s | forest alone ÷ it |",
        "|---|---:|---:|",
        f"| the forest alone (`Forest.update`) | {d['points_per_s']:,.0f} | 1.00 |",
        f"| the whole scoring path (`Detector.process_slots` as the pipeline drives it: series to slots, "
        "scoring stage, forest) | "
        f"{pipe['points_per_s']:,.0f} | {d['points_per_s'] / pipe['points_per_s']:.2f} |",
        "",
        f"Inside the scoring path (share of its wall time): {spent}.",
        "",
        "Command: `.venv/bin/python -m cutstream.bench.report --only engine` "
        "(below: T=50 trees, N=256 sample, K=4 shingle, the isolation score with every tree taking every "
        f"{ours['insert_every']}th point, as krcf's 50 × 256; steady state: store full; seasonal series).",
        "",
        "| engine | points/s | ours ÷ it |",
        "|---|---:|---:|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "| measure | value |",
        "|---|---:|",
        f"| single-series latency per point, p50 / p99 | {lat['latency_ms_p50']:.3f} ms / "
        f"{lat['latency_ms_p99']:.3f} ms |",
        f"| bytes per series (state + step scratch) | {ours['bytes_per_series']:,} "
        f"(krcf: ~{many['rss_bytes_per_series']:,} of resident memory) |",
        f"| create 100,000 series (allocate + add_series) | {create['create_s'] * 1e3:.1f} ms |",
        f"| S=1000, the step's tree walks alone (both paths, every tree, nothing computed): "
        f"the most a step could do | {floor['points_per_s']:,.0f} points/s "
        f"({floor['points_per_s'] / single['points_per_s']:.1f}x krcf) |",
        f"| CPU seconds / wall seconds in the S=1000 run | {ours['cpu_s']:.2f} / {ours['wall_s']:.2f} |",
        f"| ours per CPU-second at S=1000 (what one free core gives) | "
        f"{ours['series'] * ours['points'] / ours['cpu_s']:,.0f} points |",
        "",
        "The machine is shared with other jobs while this runs; all rows come from the same run, so the "
        "ratios compare like with like. krcf runs score then update per point, single-threaded "
        "(its parallel mode off); rrcf runs its own streaming example (forget, insert, codisp per tree).",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    engine_command()
