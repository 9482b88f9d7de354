"""Read historical events from CSV or Parquet files and turn them into the events the worker reads.

Used by `cutstream replay` (into Kafka) and `cutstream backfill` (straight to Parquet results),
so that both see exactly the events a live producer would have sent: one JSON object per row with
the detector config's timestamp, dimension and measure fields, keyed by its dimension values.
Rows that cannot become a valid event (an unparseable timestamp, a non-numeric measure, a missing
dimension, a CSV line with too few or too many fields, text that is not UTF-8) are reported with
their file and line (CSV: the line the row starts on, line 1 being the header) or row (Parquet:
1-based) and skipped. A file that cannot be read at all is one :class:`StreamsError` naming it.

Timestamps are read by ``streams.timestamps.epoch_ms``: typed timestamps of every unit (with or
without a zone), dates, ISO-8601 text, and epoch numbers (integers, floats, decimals, numeric
text) in the detector's ``timestamp_unit``, by default told apart from their magnitude.
"""

from __future__ import annotations

import csv
import io
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

#: Bytes of a CSV file read per step to find where its rows start.
_SCAN_BLOCK = 1 << 22

logger = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")


def event_key(dims: Sequence[tuple[str, str]]) -> bytes:
    """The Kafka key of an event: its sorted ``name=value`` dimension pairs, so that a series
    always lands on the same partition (the worker's watermark and windows are per partition)."""
    return "&".join(f"{k}={v}" for k, v in sorted(dims)).encode()


@dataclass(frozen=True)
class BadRow:
    """A history row that was skipped, and why.

    ``row`` is the row's 1-based position among the file's rows (what resuming and the backfill's
    file names count); ``line`` is where a CSV row starts in its file (line 1 = the header; blank
    lines and values spanning lines counted), None for Parquet.
    """

    file: str
    row: int
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}: {self.reason}"
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
    first_row: int  # 1-based position of the first row the chunk covers (valid or bad)
    rows: np.ndarray  # int64[n] 1-based positions of the valid events among the file's rows
    timestamps_ms: np.ndarray  # int64[n]
    dimensions: list[pa.Array]  # per dimension of the spec: the text of each row
    measures: np.ndarray  # float64[n, k]: the spec's measures other than count, in spec order
    bad: list[BadRow] = field(default_factory=list)
    last_row: int = 0  # 1-based position of the last row the chunk covers (valid or bad)
    lines: np.ndarray | None = None  # int64[n]: CSV line of each valid event (None: Parquet)

    def where(self, i: int) -> tuple[int, int | None]:
        """(row, line) of the ``i``-th valid event, for a report about it."""
        return int(self.rows[i]), (int(self.lines[i]) if self.lines is not None else None)

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


@dataclass
class _Chunk:
    """Rows of a file as Arrow gives them, with where each one is in the file."""

    batch: pa.RecordBatch
    rows: np.ndarray  # int64[n]: 1-based positions among the file's rows
    lines: np.ndarray | None  # int64[n]: CSV lines (None: Parquet)
    first_row: int  # the chunk covers rows first_row..last_row (its bad rows among them)
    last_row: int
    skipped: list[tuple[int, int, str]]  # (row, line, reason): CSV rows Arrow could not take
    bad_cells: dict[int, str]  # index in ``batch`` → why the row is bad (text that is not UTF-8)


def _chunks(path: Path, chunk_rows: int) -> Iterator[_Chunk]:
    """The file's rows in chunks of at most ``chunk_rows``; a file that cannot be read is one error."""
    try:
        if path.suffix.lower() == ".parquet":
            yield from _parquet_chunks(path, chunk_rows)
        else:
            yield from _csv_chunks(path, chunk_rows)
    except (pa.ArrowException, OSError, csv.Error) as exc:
        kind = "Parquet" if path.suffix.lower() == ".parquet" else "CSV"
        raise StreamsError(f"{path}: cannot be read as {kind}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[_Chunk]:
    done = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        if not batch.num_rows:
            continue
        rows = np.arange(done + 1, done + batch.num_rows + 1, dtype=np.int64)
        done += batch.num_rows
        yield _Chunk(batch, rows, None, int(rows[0]), done, [], {})


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[_Chunk]:
    """A CSV's rows as text columns, each with its position and the line it starts on.

    Arrow parses (fast, in C++) but neither says where a row is nor takes a row with the wrong
    number of fields (it skips those here); :func:`_csv_blocks` finds the line and the field count
    of every row, so the rows Arrow took get their lines and the ones it skipped are reported.
    """
    read = pacsv.ReadOptions(block_size=1 << 22)
    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda _row: "skip")
    with pacsv.open_csv(path, read_options=read, parse_options=parse) as head:
        header = head.schema.names
    # Binary, then UTF-8 checked per chunk: a bad byte is a bad row, not an error for the file.
    convert = pacsv.ConvertOptions(column_types={n: pa.binary() for n in header}, strings_can_be_null=False)
    records = _Records(_csv_blocks(path))
    if records.header_fields() != len(header):
        raise StreamsError(f"{path}: the header line could not be read")
    for batch in pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert):
        text_batch, bad_cells = _utf8_columns(batch)
        for off in range(0, text_batch.num_rows, chunk_rows):
            part = text_batch.slice(off, chunk_rows)
            first_row = records.done + 1
            rows, lines, skipped = records.take(part.num_rows)
            cells = {i - off: r for i, r in bad_cells.items() if off <= i < off + part.num_rows}
            yield _Chunk(part, rows, lines, first_row, records.done, skipped, cells)
    first_row = records.done + 1
    rows, lines, skipped = records.take(0, to_end=True)
    if skipped:
        nothing = pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in header], names=header)
        yield _Chunk(nothing, rows, lines, first_row, records.done, skipped, {})


#: One block of a CSV's rows: the line each starts on, its field count, and the text of those whose
#: count is not the header's (by index in the block).
_Block = tuple[np.ndarray, np.ndarray, dict[int, str]]


class _Records:
    """The rows :func:`_csv_blocks` finds, handed out in the runs Arrow's batches take."""

    def __init__(self, blocks: Iterator[_Block]) -> None:
        self._blocks = blocks
        self._lines = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)
        self._texts: dict[int, str] = {}  # by record index from the file's start (header = 0)
        self._base = 0  # record index of self._lines[0]
        self._fields = -1
        self.done = 0  # rows (records after the header) handed out

    def _more(self) -> bool:
        block = next(self._blocks, None)
        if block is None:
            return False
        lines, counts, texts = block
        start = self._base + len(self._lines)
        self._texts.update({start + i: t for i, t in texts.items()})
        self._lines = np.concatenate([self._lines, lines])
        self._counts = np.concatenate([self._counts, counts])
        return True

    def header_fields(self) -> int:
        while not len(self._lines) and self._more():
            pass
        if not len(self._lines):
            return -1
        self._fields = int(self._counts[0])
        self._drop(1)
        return self._fields

    def _drop(self, k: int) -> None:
        self._lines, self._counts = self._lines[k:], self._counts[k:]
        self._base += k

    def take(
        self, n: int, *, to_end: bool = False
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, str]]]:
        """The next ``n`` rows Arrow took (positions, lines) and the rows it skipped before them
        (``to_end``: every row left, none of which Arrow may have taken)."""
        while True:
            good = self._counts == self._fields
            have = int(np.count_nonzero(good))
            if (have >= n and not to_end) or not self._more():
                break
        if have < n or (to_end and have):
            raise StreamsError("the CSV rows could not be matched to their lines; please report it")
        end = int(np.flatnonzero(good)[n - 1]) + 1 if n else (len(good) if to_end else 0)
        positions = np.arange(self.done + 1, self.done + end + 1, dtype=np.int64)
        took = good[:end]
        skipped = [
            (
                int(positions[i]),
                int(self._lines[i]),
                f"{int(self._counts[i])} fields where the header has {self._fields}: "
                f"{_shown(self._texts.pop(self._base + i, ''))!r}",
            )
            for i in np.flatnonzero(~took).tolist()
        ]
        rows, lines = positions[took], self._lines[:end][took]
        self.done += end
        self._drop(end)
        return rows, lines, skipped


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _csv_blocks(path: Path) -> Iterator[_Block]:
    """The rows of a CSV, block by block (:data:`_Block`), the header first; blank lines are not
    rows (as Arrow reads them).

    Blocks without a quote or a lone carriage return are split with numpy (a row is a line); from
    the first block with one on, Python's ``csv`` module reads the rest of the file, which splits
    quoted values and rows as Arrow does (a quote opens a value only at its start, ``""`` inside
    one, line breaks inside quotes kept).
    """
    line = 0  # lines before the current block
    offset = 0  # bytes before it
    fields: int | None = None  # the header's
    with open(path, "rb") as fh:
        carry = b""
        while True:
            block = fh.read(_SCAN_BLOCK)
            data = carry + block
            if not data:
                return
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if cut == 0:
                carry = data
                continue
            part, carry = data[:cut], data[cut:]
            arr = np.frombuffer(part, dtype=np.uint8)
            after_cr = np.flatnonzero(arr == 13) + 1
            if 34 in arr or np.any(after_cr >= len(arr)) or np.any(arr[after_cr[after_cr < len(arr)]] != 10):
                break  # a quote or a lone CR: the csv module from here on
            starts, ends, counts, numbers = _plain_lines(arr, line)
            if fields is None and len(counts):
                fields = int(counts[0])
            odd = np.flatnonzero(counts != fields).tolist()
            texts = {i: part[starts[i] : ends[i]].rstrip(b"\r").decode("utf-8", "replace") for i in odd}
            yield numbers, counts, texts
            line += int(np.count_nonzero(arr == 10)) + (0 if part.endswith(b"\n") else 1)
            offset += len(part)
            if not block:
                return
    yield from _quoted_blocks(path, offset, line, fields)


def _plain_lines(arr: np.ndarray, before: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-blank lines of a block without quotes: their start, end, field count and line number."""
    nl = np.flatnonzero(arr == 10)
    ends = nl if len(arr) and arr[-1] == 10 else np.append(nl, len(arr))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    length = ends - starts
    has_cr = (length > 0) & (arr[np.maximum(ends - 1, 0)] == 13)
    keep = (length - has_cr) > 0
    commas = np.bincount(np.searchsorted(ends, np.flatnonzero(arr == 44)), minlength=len(ends))
    numbers = np.arange(before + 1, before + len(ends) + 1, dtype=np.int64)
    return starts[keep], ends[keep], (commas[keep] + 1).astype(np.int64), numbers[keep]


def _quoted_blocks(path: Path, offset: int, before: int, fields: int | None) -> Iterator[_Block]:
    with open(path, "rb") as raw:
        raw.seek(offset)
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        seen = 0
        lines: list[int] = []
        counts: list[int] = []
        texts: dict[int, str] = {}
        for row in reader:
            start = before + seen + 1
            seen = reader.line_num
            if not row:
                continue
            if fields is None:
                fields = len(row)
            if len(row) != fields:
                texts[len(lines)] = ",".join(row).encode("utf-8", "replace").decode()
            lines.append(start)
            counts.append(len(row))
            if len(lines) >= 65_536:
                yield np.array(lines, np.int64), np.array(counts, np.int64), texts
                lines, counts, texts = [], [], {}
        yield np.array(lines, np.int64), np.array(counts, np.int64), texts


def _utf8_columns(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[int, str]]:
    """Binary CSV columns as text; the rows of a value that is not UTF-8 are bad (and emptied)."""
    cols: list[pa.Array] = []
    bad: dict[int, str] = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        try:
            cols.append(col.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        values = col.to_pylist()
        texts: list[str] = []
        for i, v in enumerate(values):
            try:
                texts.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                bad.setdefault(i, f"{name} is not UTF-8 text: {v[:40]!r}")
                texts.append("")
        cols.append(pa.array(texts, pa.string()))
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names), bad


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
    Each batch also carries the bad rows of the rows it covers (``first_row..last_row``).
    """
    files = history_files(path)
    for fi, file in enumerate(files):
        if fi < start[0]:
            continue
        units: set[str] = set()
        for chunk in _chunks(file, chunk_rows):
            skip_before = start[1] if fi == start[0] else 0
            if chunk.last_row < skip_before:
                continue
            yield _columns(spec, fi, file, chunk, skip_before, units)
        _say_units(spec, file, units)


def _say_units(spec: DetectorSpec, file: Path, units: set[str]) -> None:
    """Epoch numbers were read in the unit(s) their magnitude gave: say so (they might be wrong)."""
    if spec.timestamp_unit != "auto" or not units:
        return
    names = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
    read_as = " and ".join(names[u] for u in ("s", "ms", "us", "ns") if u in units)
    (logger.warning if len(units) > 1 else logger.info)(
        "history file=%s: epoch timestamps read as %s, from their magnitude (set the detector's "
        "timestamp_unit to declare the unit)",
        file,
        read_as,
    )


def _column(batch: pa.RecordBatch, name: str, file: Path, what: str) -> pa.Array:
    if name not in batch.schema.names:
        raise StreamsError(f"{file}: no column {name!r} ({what})")
    return batch.column(name)


def _timestamp_type_ok(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _timestamp_type_ok(t.value_type)
    return bool(
        pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_null(t)
    )


def _text(col: pa.Array, file: Path, name: str) -> pa.Array:
    """A dimension column as text (numbers in decimal, booleans as true/false)."""
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StreamsError(
            f"{file}: column {name!r} is {col.type}; a dimension must be text, a number or a boolean"
        ) from exc


def _measure_columns(
    spec: DetectorSpec, batch: pa.RecordBatch, file: Path, bad_reason: list[str | None]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each measure's values (NaN where its cell is empty), and which rows hold any measure; a
    cell that is not a number marks its row bad in ``bad_reason``."""
    values: list[np.ndarray] = []
    any_present = np.zeros(batch.num_rows, dtype=bool)
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
    return values, any_present


def _columns(
    spec: DetectorSpec, fi: int, file: Path, chunk: _Chunk, skip_before: int, units: set[str]
) -> HistoryBatch:
    """One chunk's valid rows as columns, and its bad rows with their reasons."""
    batch, rows = chunk.batch, chunk.rows
    n = batch.num_rows
    bad_reason: list[str | None] = [None] * n
    for i, reason in chunk.bad_cells.items():
        bad_reason[i] = reason
    ts_col = _column(batch, spec.timestamp_field, file, "the detector's timestamp_field")
    if not _timestamp_type_ok(ts_col.type):
        raise StreamsError(
            f"{file}: column {spec.timestamp_field!r} is {ts_col.type}; the timestamp must be a "
            "timestamp, a date, an epoch number or ISO-8601 text"
        )
    ts, ok = epoch_ms(ts_col, text_epoch=True, epoch_unit=spec.timestamp_unit, units_seen=units)
    for i in np.flatnonzero(~ok).tolist():
        bad_reason[i] = bad_reason[i] or f"bad timestamp {ts_col[i].as_py()!r}"
    dims: list[pa.Array] = []  # per dimension, the text of every row
    for d in spec.dimensions:
        col = _column(batch, d, file, f"a dimension of detector {spec.name}")
        for i in np.flatnonzero(~pc.is_valid(col).to_numpy(zero_copy_only=False)).tolist():
            bad_reason[i] = bad_reason[i] or f"missing dimension {d!r}"
        dims.append(_text(col, file, d).fill_null(""))
    values, any_present = _measure_columns(spec, batch, file, bad_reason)
    for i in np.flatnonzero(~any_present).tolist():
        bad_reason[i] = bad_reason[i] or "no measure value (every measure field is empty)"
    keep = (np.array([r is None for r in bad_reason], dtype=bool) if n else np.zeros(0, bool)) & (
        rows >= skip_before
    )
    lines = chunk.lines
    bad = [
        BadRow(str(file), int(rows[i]), reason, int(lines[i]) if lines is not None else None)
        for i, reason in enumerate(bad_reason)
        if reason is not None and rows[i] >= skip_before
    ]
    bad += [BadRow(str(file), row, reason, line) for row, line, reason in chunk.skipped if row >= skip_before]
    bad.sort(key=lambda b: b.row)
    idx = np.flatnonzero(keep)
    take = pa.array(idx, pa.int64())
    measures = np.stack([v[idx] for v in values], axis=1) if values else np.zeros((len(idx), 0))
    return HistoryBatch(
        spec,
        fi,
        chunk.first_row,
        rows[idx],
        ts[idx],
        [c.take(take) for c in dims],
        measures,
        bad,
        last_row=chunk.last_row,
        lines=lines[idx] if lines is not None else None,
    )
