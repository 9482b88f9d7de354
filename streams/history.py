"""Read historical events from CSV or Parquet files and turn them into the events the worker reads.

Used by `cutstream replay` (into Kafka) and `cutstream backfill` (straight to Parquet results),
so that both see exactly the events a live producer would have sent: one JSON object per row with
the detector config's timestamp, dimension and measure fields, keyed by its dimension values.
Rows that cannot become a valid event (an unparseable timestamp, a non-numeric measure, a missing
dimension) are reported with their file and row number and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streams.config import DetectorSpec
from streams.errors import StreamsError
from streams.timestamps import epoch_ms

logger = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")


def event_key(dims: Sequence[tuple[str, str]]) -> bytes:
    """The Kafka key of an event: its sorted ``name=value`` dimension pairs, so that a series
    always lands on the same partition (the worker's watermark and windows are per partition)."""
    return "&".join(f"{k}={v}" for k, v in sorted(dims)).encode()


@dataclass(frozen=True)
class BadRow:
    """A history row that was skipped, and why."""

    file: str
    row: int  # 1-based data row number (the header is row 0)
    reason: str

    def __str__(self) -> str:
        if self.file.lower().endswith(".csv"):  # file:line, as editors read it (the header is line 1)
            return f"{self.file}:{self.row + 1}: {self.reason}"
        return f"{self.file}: row {self.row}: {self.reason}"


@dataclass
class HistoryBatch:
    """Valid rows of one chunk of one file, in file order, as columns.

    ``timestamps_ms``, ``dimensions`` and ``measures`` go to the parser as they are
    (``EventParser.from_columns``: backfill); :meth:`events` makes the JSON events a live producer
    would send, with their keys (replay).
    """

    spec: DetectorSpec
    file_index: int
    first_row: int  # 1-based row number of the chunk's first row
    rows: np.ndarray  # int64[n] 1-based row numbers of the valid events
    timestamps_ms: np.ndarray  # int64[n]
    dimensions: list[pa.Array]  # per dimension of the spec: the text of each row
    measures: np.ndarray  # float64[n, k]: the spec's measures other than count, in spec order
    bad: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def events(self) -> tuple[list[bytes], list[bytes]]:
        """Keys (sorted ``name=value`` pairs) and compact JSON events, built column-wise with Arrow."""
        value_measures = [m.field for m in self.spec.measures if m.aggregation != "count"]
        return _encode_events(
            self.spec,
            self.timestamps_ms,
            list(zip(self.spec.dimensions, self.dimensions, strict=True)),
            [(f, self.measures[:, j]) for j, f in enumerate(value_measures)],
        )


def history_files(path: Path) -> list[Path]:
    """A file, or every CSV/Parquet file under a directory in name order."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise StreamsError(f"{path}: unsupported file type (use .csv or .parquet)")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise StreamsError(f"{path}: no .csv or .parquet files in this directory")
        return files
    raise StreamsError(f"{path}: no such file or directory")


def count_rows(files: Sequence[Path]) -> int:
    """Data rows of the history files, for a progress bar: Parquet's from its metadata, a CSV's by
    counting its lines (less the header; a quoted value spanning lines makes it an estimate)."""
    total = 0
    for f in files:
        if f.suffix.lower() == ".parquet":
            total += pq.ParquetFile(f).metadata.num_rows
            continue
        with open(f, "rb") as fh:
            total += max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1)
    return total


def _record_batches(path: Path, chunk_rows: int, skipped: list[BadRow]) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches of at most ``chunk_rows``; rows of the wrong width go to ``skipped``."""
    for whole in _file_batches(path, chunk_rows, skipped):
        for off in range(0, whole.num_rows, chunk_rows):
            yield whole.slice(off, chunk_rows)


def _file_batches(path: Path, chunk_rows: int, skipped: list[BadRow]) -> Iterator[pa.RecordBatch]:
    if path.suffix.lower() == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
        return
    # Read everything as text: the history reader does its own, reported, conversion.
    opts = pacsv.ConvertOptions(column_types=None, strings_can_be_null=False, auto_dict_encode=False)
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _: "skip"),  # the names only
        convert_options=opts,
    )
    header = reader.schema.names
    reader.close()
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in header})
    lines = _LineFinder(path)

    def wrong_width(row: pacsv.InvalidRow) -> str:
        line = lines.find(row.text)
        skipped.append(
            BadRow(
                str(path),
                line - 1,
                f"{row.actual_columns} columns where the header has {row.expected_columns}",
            )
        )
        return "skip"

    yield from pacsv.open_csv(
        path,
        # one thread: rows of the wrong width are met in file order (their lines are found in order)
        read_options=pacsv.ReadOptions(block_size=1 << 22, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=wrong_width),
        convert_options=convert,
    )


class _LineFinder:
    """File line numbers of rows pyarrow skipped (it gives their text, not their number).

    Reads the file from where the last one was found, so that all of them cost one pass at most;
    nothing is read for a file without such rows.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lines: Iterator[tuple[int, str]] | None = None
        self._last = 1

    def find(self, text: str) -> int:
        if self._lines is None:
            fh = self.path.open(encoding="utf-8", errors="replace", newline="")
            self._lines = enumerate(fh, start=1)
        for number, line in self._lines:
            if line.rstrip("\r\n") == text:
                self._last = number
                return number
        return self._last  # not found line by line (a quoted value spanning lines): the nearest


class _RowNumbers:
    """1-based data row numbers of the rows pyarrow returns, counting the rows it skipped."""

    def __init__(self, skipped: list[BadRow]) -> None:
        self.skipped = skipped
        self.next = 1

    def take(self, n: int) -> np.ndarray:
        ahead = np.array(sorted(b.row for b in self.skipped if b.row >= self.next), dtype=np.int64)
        candidates = np.arange(self.next, self.next + n + len(ahead), dtype=np.int64)
        rows = candidates[~np.isin(candidates, ahead)][:n] if len(ahead) else candidates
        if n:
            self.next = int(rows[-1]) + 1
        return rows


def _numbers(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Any measure column → (float64[n], ok bool[n]); non-numeric text and non-finite are not ok."""
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        arr = pc.cast(col, pa.float64())
        vals = arr.fill_null(np.nan).to_numpy(zero_copy_only=False)
        return vals, np.isfinite(vals)
    out = np.full(len(col), np.nan)
    for i, s in enumerate(col.to_pylist()):
        try:
            out[i] = float(s)
        except (TypeError, ValueError):
            continue
    return out, np.isfinite(out)


def _empty_cells(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """bool[n]: null cells, and empty or blank text cells."""
    absent = ~pc.is_valid(col).to_numpy(zero_copy_only=False)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        blank = pc.equal(pc.utf8_trim_whitespace(col.fill_null("")), "")
        absent |= blank.to_numpy(zero_copy_only=False)
    return np.asarray(absent, dtype=bool)


def _json_text(values: pa.Array) -> pa.Array:
    """JSON string literals of ``values``, encoding each distinct value once."""
    import msgspec

    arr = pa.array(values, pa.string()) if not isinstance(values, pa.Array | pa.ChunkedArray) else values
    arr = pc.dictionary_encode(arr)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    literals = pa.array([msgspec.json.encode(v).decode() for v in arr.dictionary.to_pylist()], pa.string())
    return literals.take(arr.indices)


def _encode_events(
    spec: DetectorSpec,
    ts: np.ndarray,
    dims: list[tuple[str, pa.Array]],
    measures: list[tuple[str, np.ndarray]],
) -> tuple[list[bytes], list[bytes]]:
    """Keys (sorted ``name=value`` pairs) and compact JSON events, built column-wise with Arrow."""
    import msgspec

    n = len(ts)
    if n == 0:
        return [], []

    def name(field: str) -> str:
        return msgspec.json.encode(field).decode()

    parts: list[pa.Array | str] = [
        "{" + name(spec.timestamp_field) + ":",
        pa.array(ts, pa.int64()).cast(pa.string()),
    ]
    for d, vals in dims:
        parts += ["," + name(d) + ":", _json_text(vals)]
    for f, vals in measures:
        # An absent measure (NaN) is left out of the event, as a live producer would leave it out.
        text = pa.array(vals, pa.float64(), from_pandas=True).cast(pa.string())
        parts.append(pc.binary_join_element_wise("," + name(f) + ":", text, ""))
    parts.append("}")
    events = pc.binary_join_element_wise(*parts, "", null_handling="skip")
    key_parts: list[pa.Array | str] = []
    for d, vals in sorted(dims, key=lambda kv: kv[0]):
        key_parts += [("&" if key_parts else "") + f"{d}=", vals]
    keys = (
        pc.binary_join_element_wise(*key_parts, "").cast(pa.binary()).to_pylist() if key_parts else [b""] * n
    )
    return keys, events.cast(pa.binary()).to_pylist()


def read_history(
    path: Path, spec: DetectorSpec, chunk_rows: int = 100_000, start: tuple[int, int] = (0, 0)
) -> Iterator[HistoryBatch]:
    """Valid rows of every history file under ``path``, in file then row order, as columns.

    ``start = (file_index, row)`` skips everything before that 1-based row of that file (resume).
    """
    files = history_files(path)
    for fi, file in enumerate(files):
        if fi < start[0]:
            continue
        skipped: list[BadRow] = []  # rows of the wrong width, met by the CSV reader
        numbers = _RowNumbers(skipped)
        reported = 0
        skip_before = start[1] if fi == start[0] else 0
        for batch in _record_batches(file, chunk_rows, skipped):
            rows = numbers.take(batch.num_rows)
            if batch.num_rows == 0 or rows[-1] < skip_before:
                continue
            out = _columns(spec, fi, file, batch, rows, skip_before)
            out.bad[:0] = [b for b in skipped[reported:] if b.row >= skip_before]
            reported = len(skipped)
            yield out
        left = [b for b in skipped[reported:] if b.row >= skip_before]
        if left:  # skipped after the last row that parsed (or no row parsed at all)
            yield _no_rows(spec, fi, numbers.next, left)


def _no_rows(spec: DetectorSpec, fi: int, first_row: int, bad: list[BadRow]) -> HistoryBatch:
    """A batch of bad rows only."""
    k = sum(1 for m in spec.measures if m.aggregation != "count")
    empty = np.zeros(0, dtype=np.int64)
    dims = [pa.array([], pa.string()) for _ in spec.dimensions]
    return HistoryBatch(spec, fi, first_row, empty, empty, dims, np.zeros((0, k)), bad)


#: Read as epoch ms, these fall in 1970-01-12 .. 1973-03-03: epoch *seconds* of 2001-2286 (a
#: history file of those would put every event into one window of 1970).
_SECONDS_LOW = 1_000_000_000
_SECONDS_HIGH = 100_000_000_000


def _column(batch: pa.RecordBatch, name: str, file: Path, what: str) -> pa.Array:
    if name not in batch.schema.names:
        raise StreamsError(f"{file}: no column {name!r} ({what})")
    return batch.column(name)


def _columns(
    spec: DetectorSpec, fi: int, file: Path, batch: pa.RecordBatch, rows: np.ndarray, skip_before: int
) -> HistoryBatch:
    """One chunk's valid rows as columns, and its bad rows with their reasons."""
    n = batch.num_rows
    bad_reason: list[str | None] = [None] * n
    ts_col = _column(batch, spec.timestamp_field, file, "the detector's timestamp_field")
    ts, ok = epoch_ms(ts_col, text_epoch=True)
    for i in np.flatnonzero(~ok).tolist():
        bad_reason[i] = f"bad timestamp {ts_col[i].as_py()!r}"
    for i in np.flatnonzero(ok & (ts >= _SECONDS_LOW) & (ts < _SECONDS_HIGH)).tolist():
        bad_reason[i] = (
            f"timestamp {ts_col[i].as_py()!r} looks like epoch seconds; "
            "write epoch milliseconds (x1000) or ISO-8601"
        )
    dims: list[pa.Array] = []  # per dimension, the text of every row
    for d in spec.dimensions:
        col = _column(batch, d, file, f"a dimension of detector {spec.name}")
        for i in np.flatnonzero(~pc.is_valid(col).to_numpy(zero_copy_only=False)).tolist():
            bad_reason[i] = bad_reason[i] or f"missing dimension {d!r}"
        dims.append(pc.cast(col, pa.string()).fill_null(""))
    values: list[np.ndarray] = []
    any_present = np.zeros(n, dtype=bool)
    for m in spec.measures:
        if m.aggregation == "count":
            any_present[:] = True
            continue
        raw = _column(batch, m.field, file, f"a measure of detector {spec.name}")
        v, vok = _numbers(raw)
        # An empty cell is an absent measure, as a live event without the field: the row still
        # counts for the other measures (NaN marks it absent).
        absent = _empty_cells(raw)
        v = np.where(absent, np.nan, v)
        for i in np.flatnonzero(~vok & ~absent).tolist():
            bad_reason[i] = bad_reason[i] or f"non-numeric {m.field} {raw[i].as_py()!r}"
        any_present |= ~absent
        values.append(v)
    for i in np.flatnonzero(~any_present).tolist():
        bad_reason[i] = bad_reason[i] or "no measure value (every measure field is empty)"
    keep = (np.array([r is None for r in bad_reason], dtype=bool) if n else np.zeros(0, bool)) & (
        rows >= skip_before
    )
    bad = [
        BadRow(str(file), int(rows[i]), reason)
        for i, reason in enumerate(bad_reason)
        if reason is not None and rows[i] >= skip_before
    ]
    idx = np.flatnonzero(keep)
    take = pa.array(idx)
    measures = np.stack([v[idx] for v in values], axis=1) if values else np.zeros((len(idx), 0))
    return HistoryBatch(
        spec, fi, int(rows[0]), rows[idx], ts[idx], [c.take(take) for c in dims], measures, bad
    )
