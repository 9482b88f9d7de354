"""`cutstream bench checkpoint`: the cost of a partition checkpoint's detector state.

Times the four steps a checkpoint's model state goes through, for ``--series`` series of one
detector at the default model config (``detector/config.py``): capture on the worker's thread
(``Detector.to_state``), encode (``streams.checkpoint.dumps``), decode (``loads``) and restore
(``Detector.from_state`` into an empty detector, as a worker does on assignment).

Every series carries ``--points`` values (default: the config's ``sample_size``, i.e. full
windows, the steady state of a long-running worker). Feeding that many points to thousands of
series through the forest would take minutes, so a few template series are scored for real and
the detector under test is filled with copies of their models (each copy a series of its own); the
cost of every timed step depends on the sizes of the arrays, not on their contents.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

import click
import numpy as np

TEMPLATES = 8
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _source(n_series: int, points: int | None) -> tuple[Any, list[str]]:
    from detector.config import ModelConfig
    from detector.detector import Detector

    config = ModelConfig()
    n_points = config.forest.sample_size if points is None else points
    templates = Detector(config)
    rng = np.random.default_rng(0)
    t = np.arange(n_points)
    keys, values = [], []
    for j in range(TEMPLATES):
        values.append(10.0 + 3.0 * np.sin(t / (5.0 + j)) + rng.normal(0, 0.3, n_points))
        keys.append(np.full(n_points, f"template-{j}", dtype=object))
    order = np.argsort(np.tile(t, TEMPLATES), kind="stable")
    templates.process_many(
        list(np.concatenate(keys)[order]),
        np.concatenate(values)[order],
        START_MS + np.tile(t, TEMPLATES)[order].astype(np.int64) * 60_000,
    )
    per_key = templates.to_state(templates.keys())
    # Copies of the templates, written in the per-series format every version reads.
    entries = _per_series_entries(templates, per_key)
    keys_out = [f"host=h{i}" for i in range(n_series)]
    state = {
        "version": 1,
        "config": per_key["config"],
        "series": {k: entries[i % TEMPLATES] for i, k in enumerate(keys_out)},
    }
    det = Detector(config, capacity=n_series)
    det.from_state(state)
    return det, keys_out


def _per_series_entries(templates: Any, state: dict[str, Any]) -> list[dict[str, Any]]:
    if "series" in state:  # the per-series format
        return [state["series"][f"template-{j}"] for j in range(TEMPLATES)]
    return [
        templates.to_state([f"template-{j}"], version=1)["series"][f"template-{j}"] for j in range(TEMPLATES)
    ]


def run(n_series: int, points: int | None = None) -> dict[str, Any]:
    """Seconds per step and checkpoint bytes for ``n_series`` series; one JSON-able dict."""
    from detector.config import ModelConfig
    from detector.detector import Detector
    from streams.checkpoint import Checkpoint, dumps, loads

    det, keys = _source(n_series, points)
    gc.collect()
    t0 = time.perf_counter()
    state = det.to_state(keys)
    t1 = time.perf_counter()
    data = dumps(Checkpoint(topic="bench", partition=0, next_offset=0, detectors={"d": state}))
    t2 = time.perf_counter()
    del state, det
    gc.collect()
    t3 = time.perf_counter()
    ckpt = loads(data)
    t4 = time.perf_counter()
    size = len(data)
    del data
    gc.collect()
    t5 = time.perf_counter()
    fresh = Detector(ModelConfig(), capacity=n_series)
    restored = fresh.from_state(ckpt.detectors["d"])
    t6 = time.perf_counter()
    if len(restored) != n_series:
        raise click.ClickException(f"restored {len(restored)} series of {n_series}")
    capture, encode, decode, restore = t1 - t0, t2 - t1, t4 - t3, t6 - t5
    return {
        "series": n_series,
        "points_per_series": ModelConfig().forest.sample_size if points is None else points,
        "capture_s": round(capture, 3),
        "encode_s": round(encode, 3),
        "decode_s": round(decode, 3),
        "restore_s": round(restore, 3),
        "total_s": round(capture + encode + decode + restore, 3),
        "bytes": size,
    }


@click.command("checkpoint")
@click.option("--series", "series", type=int, multiple=True, default=(2_000, 10_000), show_default=True)
@click.option(
    "--points", type=int, default=None, help="values per series [default: sample_size, full windows]"
)
def checkpoint_command(series: tuple[int, ...], points: int | None) -> None:
    """Capture, encode, decode and restore the detector state of many series (one JSON line each)."""
    for n in series:
        click.echo(json.dumps(run(n, points)))
        gc.collect()


COMMANDS = [checkpoint_command]


def markdown_report(quick: bool) -> str:
    """The BENCHMARKS.md block: every step at 2,000 and 10,000 series, young and full windows."""
    sizes = (
        [(2_000, 200), (2_000, None)]
        if quick
        else [(2_000, 200), (10_000, 200), (2_000, None), (10_000, None)]
    )
    rows = []
    for n, points in sizes:
        r = run(n, points)
        gc.collect()
        rows.append(
            f"| {r['series']:,} × {r['points_per_series']:,} | {r['capture_s']:.2f} | {r['encode_s']:.2f} | "
            f"{r['decode_s']:.2f} | {r['restore_s']:.2f} | {r['total_s']:.2f} | {r['bytes'] / 1e6:,.0f} MB |"
        )
    return "\n".join(
        [
            "Command: `cutstream bench checkpoint --series 2000 --series 10000 [--points 200]`: the detector "
            "state of one partition's series at the default model (5 trees × 3000 points), captured on the "
            "worker's thread (`Detector.to_state`), encoded into a checkpoint, decoded, restored into an "
            "empty detector; seconds, one run each.",
            "",
            "| series × points | capture | encode | decode | restore | total | file |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
