"""`cutstream backfill`: history files → Parquet results, without Kafka, through the worker's path.

Each history row becomes the JSON event a live producer would send (`streams.history`), and the
events go through the same stages as in the worker: `EventParser` → `WindowState` →
`Detector.process_many` → `build_results` → `ParquetSink`. With the same seed and events, the
records equal those of a live run. The output files are named after the input rows they cover
(source ``backfill.<detector>``), so a re-run rewrites the same files instead of adding to them.

At the end of the input, the windows still open are closed (as the idle timeout would close them
in a live run), unless ``close_open=False``. The models' state can be saved for a warm start
(`save_warm_start`): a worker started with it reports INFERENCE from its first live window.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.detector import Detector
from sinks.parquet import ParquetSink
from streams.config import DetectorSpec
from streams.history import BadRow, history_files, read_history
from streams.parse import EventParser
from streams.window import WindowState
from streams.worker import build_results

logger = logging.getLogger(__name__)


@dataclass
class BackfillReport:
    events: int = 0
    results: int = 0
    anomalies: int = 0
    files_written: int = 0
    bad: list[BadRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _drain(windows: WindowState) -> None:
    """Move the watermark past every open window (the end of the input is the end of time)."""
    if windows.watermark is not None:
        windows.watermark += windows.window_ms + windows.lateness_ms


def backfill(
    path: Path,
    spec: DetectorSpec,
    data_dir: Path,
    *,
    backend: str = "cpu",
    detector: Detector | None = None,
    chunk_rows: int = 200_000,
    close_open: bool = True,
    write: bool = True,
) -> tuple[BackfillReport, Detector]:
    """Score every history row under ``path`` and write the result records under ``data_dir``.

    Returns the report and the detector (whose state can seed a warm start).
    """
    t0 = time.perf_counter()
    parser = EventParser(spec)
    windows = WindowState(spec, parser.registry)
    det = detector if detector is not None else Detector(spec.model, backend=backend)
    sink = ParquetSink(Path(data_dir))
    report = BackfillReport()
    source = f"backfill.{spec.name}"
    files = history_files(path)
    row_base = 0  # rows of the files before the current one: global row numbers name the output files
    current, current_rows = 0, 0

    def emit(first: int, last: int) -> None:
        closed = windows.advance()
        if not len(closed):
            return
        scores = det.process_many(
            closed.timeseries_id,
            np.asarray(closed.value, dtype=np.float64),
            np.asarray(closed.window_start_ms, dtype=np.int64),
            np.asarray(closed.missing, dtype=bool),
        )
        table = build_results(spec.name, closed, scores)
        report.results += table.num_rows
        report.anomalies += int(np.asarray(scores.decision).sum())
        if write:
            report.files_written += len(sink.write(table, source, first, last))

    for batch in read_history(path, spec, chunk_rows=chunk_rows):
        if batch.file_index != current:
            row_base += current_rows
            current, current_rows = batch.file_index, 0
        report.bad.extend(batch.bad)
        n_rows = len(batch.rows) + len(batch.bad)
        current_rows = batch.first_row + n_rows - 1
        first = row_base + batch.first_row
        if not batch.values:
            continue
        parsed = parser.parse(batch.values)
        rejects = list(parsed.rejects) + list(windows.add(parsed))
        for i, reason in rejects:
            report.bad.append(BadRow(str(files[batch.file_index]), int(batch.rows[i]), reason))
        report.events += len(batch.values) - len(rejects)
        emit(first, first + n_rows - 1)
    if close_open:
        _drain(windows)
        end = row_base + current_rows
        emit(end + 1, end + 1)
    report.seconds = time.perf_counter() - t0
    logger.info(
        "backfill done detector=%s events=%d results=%d anomalies=%d seconds=%.1f",
        spec.name,
        report.events,
        report.results,
        report.anomalies,
        report.seconds,
    )
    return report, det


def save_warm_start(det: Detector, spec: DetectorSpec, path: Path) -> int:
    """Write every series' model for ``cutstream worker --warm-start``; returns the series count.

    The file is a checkpoint (`streams.checkpoint` format: JSON header, raw array bytes, a
    CRC, never unpickled) that belongs to no partition.
    """
    from streams.checkpoint import Checkpoint, dumps

    keys = det.keys()
    ckpt = Checkpoint(
        topic=f"warm-start:{spec.name}",
        partition=-1,
        next_offset=0,
        detectors={spec.name: det.to_state(keys)},
        series={spec.name: keys},
    )
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(dumps(ckpt))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(keys)


def load_warm_start(path: Path, spec: DetectorSpec) -> dict[str, Any]:
    """The detector state saved by :func:`save_warm_start` for ``spec`` (checked to match it)."""
    from streams.checkpoint import loads
    from streams.errors import ConfigError

    ckpt = loads(Path(path).read_bytes())
    if ckpt.topic != f"warm-start:{spec.name}" or spec.name not in ckpt.detectors:
        raise ConfigError(f"{path} was not made for detector {spec.name!r} ({ckpt.topic})")
    state: dict[str, Any] = ckpt.detectors[spec.name]
    if state.get("config") != spec.model.model_dump(mode="json"):
        raise ConfigError(
            f"{path} was made with other model settings than detector {spec.name!r} has now; "
            "run the backfill again"
        )
    return state
