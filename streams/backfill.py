"""`cutstream backfill`: history files → result records, without Kafka, through the worker's stages.

History rows go through :class:`streams.pipeline.DetectorPipeline` like live events do (one
partition), as columns: ``streams.history`` reads and checks each row, and
``EventParser.from_columns`` takes them without a JSON round trip. With the same seed and events,
the records equal those of a live run (``tests/integration/test_three_ways.py``).

:class:`Backfill` yields every scoring step (:class:`BackfillStep`: the records and scores of the
windows that closed after a chunk of rows), for callers that want the records themselves
(``cutstream evaluate``); :func:`backfill` writes them to Parquet, in files named after the input
rows they cover (source ``backfill.<detector>``), so a re-run rewrites the same files.

At the end of the input, the windows still open are closed (as the idle timeout would close them
in a live run), unless ``close_open=False``. The models' state can be saved for a warm start
(:func:`save_warm_start`): a worker started with it reports INFERENCE from its first live window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.detector import Detector, ScoreBatch
from sinks.parquet import ParquetSink
from sinks.record import ResultBatch
from streams.checkpoint import load_warm_start, save_warm_start
from streams.config import DetectorSpec
from streams.history import BadRow, history_files, read_history
from streams.pipeline import DetectorPipeline

__all__ = ["Backfill", "BackfillReport", "BackfillStep", "backfill", "load_warm_start", "save_warm_start"]

logger = logging.getLogger(__name__)

#: The one partition of a backfill.
_PARTITION = 0


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


@dataclass(frozen=True)
class BackfillStep:
    """The records of the windows that closed once the rows ``first_row..last_row`` were read.

    Row numbers count across the input's files in order (1-based), so they name the input a step
    covers whatever the chunking; the step after the last row (``close_open``) covers
    ``[end + 1, end + 1]``.
    """

    first_row: int
    last_row: int
    results: ResultBatch
    scores: ScoreBatch


class Backfill:
    """Every history row under ``path`` through the detector's pipeline, as scoring steps.

    Example:
        >>> run = Backfill(Path("history.csv"), spec)  # doctest: +SKIP
        >>> for step in run.steps():  # doctest: +SKIP
        ...     table = step.results.table()
        >>> run.report.events, run.detector  # doctest: +SKIP

    Args:
        detector: models to continue from (a fresh detector when None); see :attr:`detector`.
        chunk_rows: rows read (and windowed) per step.
        close_open: close the windows still open at the end of the input.
    """

    def __init__(
        self,
        path: Path,
        spec: DetectorSpec,
        *,
        backend: str = "cpu",
        detector: Detector | None = None,
        chunk_rows: int = 200_000,
        close_open: bool = True,
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.pipeline: DetectorPipeline[int] = DetectorPipeline(spec, detector, backend=backend)
        self.chunk_rows = chunk_rows
        self.close_open = close_open
        self.report = BackfillReport()

    @property
    def detector(self) -> Detector:
        """The models after the steps read so far (their state can seed a warm start)."""
        return self.pipeline.detector

    def steps(self) -> Iterator[BackfillStep]:
        """Read, window and score the history; one step per chunk that closed windows."""
        t0 = time.perf_counter()
        files = history_files(self.path)
        row_base = 0  # rows of the files before the current one: global row numbers
        current, current_rows = 0, 0
        for batch in read_history(self.path, self.spec, chunk_rows=self.chunk_rows):
            if batch.file_index != current:
                row_base += current_rows
                current, current_rows = batch.file_index, 0
            self.report.bad.extend(batch.bad)
            current_rows = batch.last_row
            if not len(batch):
                continue
            rejects = self.pipeline.add_columns(
                _PARTITION, batch.timestamps_ms, batch.dimensions, batch.measures
            )
            for i, reason in rejects:
                row, line = batch.where(i)
                self.report.bad.append(BadRow(str(files[batch.file_index]), row, reason, line))
            self.report.events += len(batch) - len(rejects)
            yield from self._score(row_base + batch.first_row, row_base + batch.last_row)
        if self.close_open:
            self.pipeline.drain(_PARTITION)
            end = row_base + current_rows
            yield from self._score(end + 1, end + 1)
        self.report.seconds += time.perf_counter() - t0

    def _score(self, first: int, last: int) -> Iterator[BackfillStep]:
        scored = self.pipeline.step([_PARTITION])
        if scored is None:
            return
        self.report.results += len(scored.results)
        self.report.anomalies += int(np.asarray(scored.scores.decision).sum())
        yield BackfillStep(first, last, scored.results, scored.scores)


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
    on_rows: Callable[[int], None] | None = None,
) -> tuple[BackfillReport, Detector]:
    """Score every history row under ``path`` and write the result records under ``data_dir``.

    ``on_rows(n)`` is told after each step that the first ``n`` input rows are done (a progress bar).
    Returns the report and the detector (whose state can seed a warm start).
    """
    run = Backfill(
        path, spec, backend=backend, detector=detector, chunk_rows=chunk_rows, close_open=close_open
    )
    sink = ParquetSink(Path(data_dir))
    source = f"backfill.{spec.name}"
    for step in run.steps():
        if write:
            files = sink.write(step.results.table(), source, step.first_row, step.last_row)
            run.report.files_written += len(files)
        if on_rows is not None:
            on_rows(step.last_row)
    report = run.report
    logger.info(
        "backfill done detector=%s events=%d results=%d anomalies=%d seconds=%.1f",
        spec.name,
        report.events,
        report.results,
        report.anomalies,
        report.seconds,
    )
    return report, run.detector
