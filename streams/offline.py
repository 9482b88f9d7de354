"""Offline scoring (`cutstream score`): CSV files in, scores out, through the worker's Detector.

Input: a CSV with a ``timestamp,value`` header (the NAB format; rows in stream order; timestamps may
repeat or step back). Output: the same rows in the same order as ``timestamp,value,anomaly_score``
(``anomaly_score`` = anomalyScore / 100, in [0, 1]) followed by extra columns (raw score, expected
value, decision, confidence, model stage). Timestamp and value are written back exactly as read.

Scoring is causal (a row's score depends only on the rows before and at it: the Detector is a
stream), uses one configuration for every file, and is deterministic for a seed. Each file is one
series, scored under the same key, so that its scores depend on its rows and the seed only (not on
its name, nor on the other files of a folder): a prefix of a file scores exactly as the start of
the whole file.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.config import ModelConfig
from detector.detector import Detector, ScoreBatch
from sinks.storage import writing
from streams.errors import StreamsError
from streams.timestamps import epoch_ms

logger = logging.getLogger(__name__)

#: Extra output columns after the contract's three.
EXTRA_COLUMNS = ("raw_score", "expected_value", "anomaly_decision", "confidence", "model_stage")


class OfflineInputError(StreamsError):
    """An input file is not a ``timestamp,value`` CSV."""


@dataclass(frozen=True)
class SeriesFile:
    """One input CSV, read: the text of each row (kept verbatim) and the parsed arrays."""

    path: Path
    timestamp_text: list[str]
    value_text: list[str]
    values: np.ndarray  # float64[n]
    timestamps_ms: np.ndarray  # int64[n]


def _parse_timestamps(texts: Sequence[str]) -> np.ndarray:
    """ISO-8601 text or epoch milliseconds → int64 epoch ms (row positions if some do not parse)."""
    ms, ok = epoch_ms(texts, text_epoch=True)
    if ok.all():
        return ms
    logger.warning("timestamps are neither epoch ms nor ISO-8601; using row positions")
    return np.arange(len(texts), dtype=np.int64)


def read_series_csv(path: Path) -> SeriesFile:
    """Read a ``timestamp,value`` CSV.

    Raises:
        OfflineInputError: no such header, or a value that is not a finite number.
    """
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["timestamp", "value"]:
            raise OfflineInputError(f"{path}: expected a 'timestamp,value' header, got {header!r}")
        ts_text: list[str] = []
        val_text: list[str] = []
        parsed: list[float] = []
        bad: list[int] = []  # file line numbers of the rows whose value is not a finite number
        for row in reader:
            if not row:
                continue
            value = _finite(row[1]) if len(row) >= 2 else None
            if value is None:
                bad.append(reader.line_num)
                continue
            ts_text.append(row[0])
            val_text.append(row[1])
            parsed.append(value)
    if bad:
        lines = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise OfflineInputError(
            f"{path}: {len(bad)} row(s) without a finite number in 'value', on line(s) {lines}; "
            "fill or drop them first"
        )
    values = np.array(parsed, dtype=np.float64)
    return SeriesFile(path, ts_text, val_text, values, _parse_timestamps(ts_text))


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


#: The key every offline file is scored under: a file's scores depend only on its own rows and the
#: seed, never on its name or on the other files of a folder (the forest seeds a series' random
#: cuts from its key).
OFFLINE_KEY = "offline"


def score_values(
    values: np.ndarray,
    timestamps_ms: np.ndarray,
    config: ModelConfig,
    chunk_points: int = 4096,
    backend: str = "cpu",
) -> ScoreBatch:
    """Score one series (rows in stream order) with a fresh Detector, ``chunk_points`` rows per call.

    The chunk size does not change the result: the detector is a stream (a contract test checks it).
    """
    det = Detector(config, backend=backend, capacity=1)
    parts = []
    for start in range(0, len(values), chunk_points):
        seg = slice(start, start + chunk_points)
        m = len(values[seg])
        parts.append(det.process_many([OFFLINE_KEY] * m, values[seg], timestamps_ms[seg]))
    return _concat(parts)


def score_series(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], config: ModelConfig, backend: str = "cpu"
) -> dict[str, ScoreBatch]:
    """Score several series, each on its own (see ``OFFLINE_KEY``).

    Args:
        series: name → (values float64[n], timestamps_ms int64[n]), rows in stream order.
        config: the model configuration (one for all series).
        backend: the forest's array backend.

    Returns:
        name → the per-row results of that series, in its row order.
    """
    return {k: score_values(v, t, config, backend=backend) for k, (v, t) in series.items()}


def _concat(parts: list[ScoreBatch]) -> ScoreBatch:
    from dataclasses import fields

    if not parts:
        return ScoreBatch(**{f.name: np.zeros(0) for f in fields(ScoreBatch)})
    return ScoreBatch(
        **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ScoreBatch)}
    )


def write_scores_csv(path: Path, src: SeriesFile, result: ScoreBatch) -> None:
    """Write ``timestamp,value,anomaly_score`` + extras, one row per input row, via a temp file."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, "scores file", tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["timestamp", "value", "anomaly_score", *EXTRA_COLUMNS])
            for i in range(len(src.timestamp_text)):
                w.writerow(
                    [
                        src.timestamp_text[i],
                        src.value_text[i],
                        f"{result.anomaly_score[i] / 100.0:.6f}",
                        f"{result.raw_score[i]:.6g}",
                        f"{result.expected_value[i]:.6g}",
                        int(result.decision[i]),
                        f"{result.confidence[i]:.2f}",
                        "INFERENCE" if result.inference[i] else "LEARNING",
                    ]
                )
        tmp.replace(path)


def score_paths(
    input_path: Path, output_path: Path, config: ModelConfig | None = None, backend: str = "cpu"
) -> list[Path]:
    """Score one CSV (output: a file) or every ``*.csv`` under a folder (output: a folder, same layout).

    Returns:
        The files written.
    """
    config = config or ModelConfig()
    if input_path.is_dir():
        sources = sorted(p for p in input_path.rglob("*.csv") if p.is_file())
        targets = [output_path / p.relative_to(input_path) for p in sources]
    else:
        sources, targets = [input_path], [output_path]
    if not sources:
        raise OfflineInputError(f"{input_path}: no CSV files to score")
    files = [read_series_csv(p) for p in sources]
    keys = [str(p) for p in sources]
    results = score_series(
        {k: (f.values, f.timestamps_ms) for k, f in zip(keys, files, strict=True)}, config, backend=backend
    )
    for k, f, target in zip(keys, files, targets, strict=True):
        write_scores_csv(target, f, results[k])
        logger.info("scored path=%s rows=%d output=%s", f.path, len(f.values), target)
    return targets
