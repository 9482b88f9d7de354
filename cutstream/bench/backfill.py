"""Backfill throughput: events/s from a large Parquet history file to Parquet results.

`cutstream bench backfill --events 10000000` writes (once, cached) a Parquet file of ``events``
events over ``series`` series (one event per series per window, a daily pattern, a few spikes),
then runs `streams.backfill.backfill` over it — the worker's stages without Kafka — and prints one
JSON line, with where the time went: ``setup`` (the detector, and its first step, where its
kernels are loaded or compiled: on a GPU that is seconds), ``parse`` (reading and checking the
history's rows), ``window`` (events into tumbling windows, closing them), ``models`` (new series'
models: ``Detector.slots_of``), ``score`` (``Detector.process_slots`` after the first step: the
forest and the scoring stage), ``results`` (the result records' columns), ``encode`` (the Arrow
table), ``write`` (Parquet files), and ``other`` (the rest: slots, bookkeeping).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

WINDOW_MS = 60_000
T0_MS = 1_767_225_600_000


def fixture(path: Path, events: int, series: int, seed: int = 1) -> Path:
    """A history file of ``events`` rows (``ts``, ``host``, ``load``), ordered by time; cached by name."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    windows = -(-events // series)
    writer = None
    tmp = path.with_name(f".{path.name}.tmp")
    hosts = pa.array([f"host-{i:06d}" for i in range(series)])
    level = rng.uniform(20, 80, series)
    try:
        done = 0
        for w in range(windows):
            n = min(series, events - done)
            load = level[:n] * (1 + 0.3 * np.sin(2 * np.pi * w / 1440)) + rng.normal(0, 1, n)
            spikes = rng.random(n) < 1e-4
            load[spikes] *= 4
            table = pa.table(
                {
                    "ts": pa.array(T0_MS + w * WINDOW_MS + rng.integers(0, WINDOW_MS, n), pa.int64()),
                    "host": hosts.slice(0, n),
                    "load": pa.array(np.round(load, 3)),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=1 << 20)
            done += n
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    return path


def run(events: int, series: int, cache_dir: Path, backend: str = "cpu") -> dict[str, Any]:
    from streams.backfill import backfill
    from streams.config import DetectorSpec

    cache_dir.mkdir(parents=True, exist_ok=True)
    history = fixture(cache_dir / f"history-{events}-{series}.parquet", events, series)
    spec = DetectorSpec(
        name="bench",
        topic="unused",
        timestamp_field="ts",
        dimensions=("host",),
        measures=({"field": "load", "aggregation": "avg"},),
        window_ms=WINDOW_MS,
    )
    out = Path(tempfile.mkdtemp(prefix="cutstream-bench-backfill-"))
    try:
        with stage_clock() as spent:
            t0 = time.perf_counter()
            report, _ = backfill(history, spec, out, backend=backend)
            seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stages = {**spent, "other": max(seconds - sum(spent.values()), 0.0)}
    return {
        "events": report.events,
        "series": series,
        "backend": backend,
        "results": report.results,
        "anomalies": report.anomalies,
        "seconds": round(seconds, 2),
        "events_per_s": round(report.events / seconds),
        "results_per_s": round(report.results / seconds),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "stage_share": {k: round(v / seconds, 3) for k, v in stages.items()},
        "model": spec.model.forest.model_dump(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


@contextlib.contextmanager
def stage_clock() -> Iterator[dict[str, float]]:
    """Time backfill's stages (module docstring) while the block runs: the functions that do them
    are wrapped, and put back after. Yields the seconds per stage, filled as they run."""
    import streams.backfill as backfill_mod
    from cutstream.bench.clock import timed, timed_iter
    from detector.detector import Detector
    from sinks.parquet import ParquetSink
    from sinks.record import ResultBatch
    from streams.pipeline import DetectorPipeline

    spent = dict.fromkeys(("setup", "parse", "window", "models", "score", "results", "encode", "write"), 0.0)

    build = ResultBatch.__dict__["build"]
    originals: list[tuple[Any, str, Any]] = [
        (DetectorPipeline, "__init__", DetectorPipeline.__init__),
        (Detector, "slots_of", Detector.slots_of),
        (backfill_mod, "read_history", backfill_mod.read_history),
        (DetectorPipeline, "add_columns", DetectorPipeline.add_columns),
        (DetectorPipeline, "close", DetectorPipeline.close),
        (Detector, "process_slots", Detector.process_slots),
        (ResultBatch, "build", build),
        (ResultBatch, "table", ResultBatch.table),
        (ParquetSink, "write", ParquetSink.write),
    ]
    wrapped = [
        timed(spent, "setup", DetectorPipeline.__init__),
        timed(spent, "models", Detector.slots_of),
        timed_iter(spent, "parse", backfill_mod.read_history),
        timed(spent, "window", DetectorPipeline.add_columns),
        timed(spent, "window", DetectorPipeline.close),
        timed(spent, "score", Detector.process_slots, first="setup"),
        classmethod(timed(spent, "results", build.__func__)),
        timed(spent, "encode", ResultBatch.table),
        timed(spent, "write", ParquetSink.write),
    ]
    try:
        for (owner, name, _), new in zip(originals, wrapped, strict=True):
            setattr(owner, name, new)
        yield spent
    finally:
        for owner, name, old in originals:
            setattr(owner, name, old)


def _cache_dir() -> Path:
    return Path(os.environ.get("CUTSTREAM_BENCH_CACHE", Path(tempfile.gettempdir()) / "cutstream-bench"))


@click.command("backfill")
@click.option("--events", type=int, default=10_000_000, show_default=True)
@click.option("--series", type=int, default=10_000, show_default=True)
@click.option("--backend", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
def backfill_command(events: int, series: int, backend: str) -> None:
    """Events/s from a Parquet history file to Parquet results (no Kafka)."""
    click.echo(json.dumps(run(events, series, _cache_dir(), backend)))


def markdown_report(quick: bool) -> str:
    events, series = (200_000, 2_000) if quick else (10_000_000, 10_000)
    r = run(events, series, _cache_dir())
    return (
        f"Command: `cutstream bench backfill --events {events} --series {series}` — a Parquet history "
        f"file of {events:,} events ({series:,} hosts, one event per host per 1-minute window) through "
        "`cutstream backfill` (history → events → parser → windows → detector → Parquet results), "
        f"default model {r['model']}. 1-minute load average at the end: {r['load_avg_1m']}.\n\n"
        "| events | results (windows) | anomalies | seconds | events/s | results/s |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        f"| {r['events']:,} | {r['results']:,} | {r['anomalies']:,} | {r['seconds']} | "
        f"{r['events_per_s']:,} | {r['results_per_s']:,} |\n\n"
        "Where the time went (share of the wall time): "
        + ", ".join(f"{k} {v:.0%}" for k, v in r["stage_share"].items())
        + ".\n"
    )


COMMANDS = [backfill_command]
