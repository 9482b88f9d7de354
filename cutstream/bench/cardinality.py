"""`make bench` section: a million distinct series under a model budget (``max_models``).

A producer puts a unique id in a dimension: every event is a series of its own. The worker's
pipeline (``DetectorPipeline`` with a model park in a temporary directory, as the worker has next to
its checkpoints) takes ``--series`` distinct ids, a step of ``--step`` events per window, of which
``--hot`` recur every window (real series that must keep their models) and the rest are new. The
run happens in a fresh process so that its resident memory (``VmRSS``/``VmHWM`` of
/proc/self/status) is its own; the bound it is held to is ``(max_models + series in one step) ×
bytes per model + the per-series bookkeeping`` (docs/ARCHITECTURE.md, "The model budget").
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: A small forest, so that the run fits the 2-core machine; the bound scales with bytes per model.
MODEL = {"forest": {"n_trees": 8, "sample_size": 64, "seed": 1}, "scoring": {"learning_ms": 0}}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(series: int, budget: int, step: int, hot: int) -> dict[str, Any]:
    import pyarrow as pa

    from streams.config import DetectorSpec, MeasureSpec
    from streams.park import ModelPark
    from streams.pipeline import DetectorPipeline

    spec = DetectorSpec(
        name="ids",
        topic="events",
        dimensions=("id",),
        measures=(MeasureSpec(field="v", aggregation="avg", missing="skip"),),
        window_ms=60_000,
        allowed_lateness_ms=0,
        max_series=0,
        max_models=budget,
        model=MODEL,
    )
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="cutstream-cardinality-") as tmp:
        root = Path(tmp)
        pipe: DetectorPipeline[int] = DetectorPipeline(
            spec, park=ModelPark("ids", lambda tp: root / f"{tp}.models")
        )
        rss0 = _status_kb("VmRSS")
        fresh_per_step = step - hot
        n_steps = -(-(series - hot) // fresh_per_step)
        hot_ids = [f"hot-{i}" for i in range(hot)]
        t0 = time.perf_counter()
        events = 0
        max_live = 0
        next_id = 0
        hot_points: list[int] = []
        windows_closed = 0
        for w in range(n_steps + 1):
            n_new = min(fresh_per_step, series - hot - next_id)
            ids = hot_ids + [f"u-{next_id + i}" for i in range(max(n_new, 0))]
            next_id += max(n_new, 0)
            ts = np.full(len(ids), w * 60_000 + 1, dtype=np.int64)
            values = rng.normal(100.0, 5.0, (len(ids), 1))
            rejects = pipe.add_columns(0, ts, [pa.array(ids)], values)
            assert not rejects, rejects[:3]
            scored = pipe.step()
            if scored is not None:  # the recurring series: did each keep its model? (points seen)
                t = scored.results.table()
                dims = [d[0]["value"] for d in t.column("dimensionList").to_pylist()]
                seen = t.column("processedDataPoints").to_pylist()
                hot_points = [n for d, n in zip(dims, seen, strict=True) if d.startswith("hot-")]
                windows_closed = w  # window w-1 closed in this step: w windows so far
            events += len(ids)
            max_live = max(max_live, len(pipe.detector))
        seconds = time.perf_counter() - t0
        segments = sum(1 for _ in root.rglob("seg-*"))
        disk = sum(p.stat().st_size for p in root.rglob("seg-*"))
        hot_live = sum(1 for n in hot_points if n == windows_closed)
        now, parked, reloaded, dropped = pipe.model_moves()
        return {
            "series": series,
            "distinct": next_id + hot,
            "budget": budget,
            "step": step,
            "hot": hot,
            "events": events,
            "seconds": seconds,
            "bytes_per_model": pipe.detector.bytes_per_series,
            "rss_start_kb": rss0,
            "rss_end_kb": _status_kb("VmRSS"),
            "rss_peak_kb": _status_kb("VmHWM"),
            "max_live": max_live,
            "live_end": len(pipe.detector),
            "hot_live": hot_live,
            "parked_now": now,
            "parked_total": parked,
            "reloaded_total": reloaded,
            "dropped_total": dropped,
            "segments": segments,
            "segment_bytes": disk,
        }


def run(series: int, budget: int, step: int, hot: int) -> dict[str, Any]:
    """The measurement in a fresh process (its memory is its own)."""
    out = subprocess.run(
        [sys.executable, "-m", "cutstream.bench.cardinality", str(series), str(budget), str(step), str(hot)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def markdown_report(quick: bool) -> str:
    series, budget = (100_000, 5_000) if quick else (1_000_000, 50_000)
    r = run(series, budget, 10_000, 1_000)
    bound_models = (r["budget"] + r["step"]) * r["bytes_per_model"]
    grown = (r["rss_peak_kb"] - r["rss_start_kb"]) * 1024
    per_key = max(grown - bound_models, 0) / r["distinct"]
    mb = 1024 * 1024
    return "\n".join(
        [
            f"Command: `.venv/bin/python -m cutstream.bench.report --only cardinality` (a fresh process; "
            f"model: 8 trees × 64 points, {r['bytes_per_model']:,} bytes per model).",
            "",
            f"{r['distinct']:,} distinct series (a unique id per event, plus {r['hot']:,} series that "
            f"recur every window), {r['step']:,} events per window, `max_models` {r['budget']:,}: "
            f"{r['events']:,} events in {r['seconds']:.0f} s ({r['events'] / r['seconds']:,.0f} events/s "
            "through window, score and the budget).",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| live models, most at any time / at the end | {r['max_live']:,} / {r['live_end']:,} |",
            f"| recurring series whose model has seen every one of their windows | {r['hot_live']:,} of "
            f"{r['hot']:,} |",
            f"| models dropped (one point) / parked / read back | {r['dropped_total']:,} / "
            f"{r['parked_total']:,} / {r['reloaded_total']:,} |",
            f"| parked now, in segment files | {r['parked_now']:,} in {r['segments']:,} files, "
            f"{r['segment_bytes'] / mb:,.1f} MB |",
            f"| resident memory at the start / peak / end | {r['rss_start_kb'] / 1024:,.0f} / "
            f"{r['rss_peak_kb'] / 1024:,.0f} / {r['rss_end_kb'] / 1024:,.0f} MB |",
            "| bound for the models: (max_models + one step) × bytes per model | "
            f"{bound_models / mb:,.0f} MB |",
            f"| growth beyond that bound, per distinct series (registry, window progress) | {per_key:,.0f} "
            "bytes |",
        ]
    )


if __name__ == "__main__":
    series, budget, step, hot = (int(a) for a in sys.argv[1:5])
    print(json.dumps(_child(series, budget, step, hot)))
