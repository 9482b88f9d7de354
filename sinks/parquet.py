"""The Parquet sink: immutable, atomically published result files that DuckDB can read at any moment.

Layout (hive partitioning; the partition keys ``detector`` and ``date`` do not clash with the
record's own ``detectorName``)::

    <data_dir>/results/detector=<name>/date=YYYY-MM-DD/<source>-<first:020d>-<last:020d>.parquet

A file's name is derived from the input it covers (``source`` is e.g. ``<topic>.<partition>``, the
offsets are the first and last input offsets of the batch), so rewriting the same input after a
crash produces the same name and replaces the file instead of adding a duplicate.

Publication protocol (see docs/ARCHITECTURE.md, "Sinks and alerts"):

* A file is written to ``.<name>.tmp`` (DuckDB's ``*.parquet`` glob does not match it; note that a
  dot prefix alone is *not* enough, DuckDB globs match hidden files), flushed, fsynced, renamed
  with ``os.replace`` and the directory fsynced. Readers see a whole file or nothing.
* Only two operations remove files: :func:`compact` and :meth:`ParquetSink.delete_after`. They hold
  the *results read lock* exclusively for the few system calls of their swap; readers that hold it
  shared (:func:`read_lock`) therefore never see a row twice, never miss one and never open a file
  that has just vanished. Writers never take the read lock (adding a file cannot disturb a reader).
* Every file carries its input segments (source, first, last, rows) in the Parquet key-value
  metadata ``cutstream.segments``; a compacted file keeps them, so ``delete_after`` can trim a
  compacted file to the exact offset and exactly-once survives compaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sinks.base import Partition, Sink
from sinks.errors import SinkError
from sinks.record import RESULT_SCHEMA, ResultBatch
from sinks.storage import writing

logger = logging.getLogger(__name__)

RESULTS_DIR = "results"
SEGMENTS_KEY = b"cutstream.segments"
_READ_LOCK = ".read.lock"
_WRITE_LOCK = ".write.lock"
_NAME_RE = re.compile(r"^(?P<source>.+)-(?P<first>\d{20})-(?P<last>\d{20})\.parquet$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_MS_PER_DAY = 86_400_000


@dataclasses.dataclass(frozen=True)
class Segment:
    """One input batch inside a file: rows ``[start, start + rows)`` came from offsets first..last."""

    source: str
    first: int
    last: int
    rows: int


@dataclasses.dataclass(frozen=True)
class ResultFile:
    """A published result file and what its name says about it."""

    path: Path
    source: str
    first: int
    last: int


def source_token(source: str) -> str:
    """The file-name-safe form of ``source``; a short hash keeps sanitised names distinct.

    Example:
        >>> source_token("events.3")
        'events.3'
        >>> source_token("my topic/3")
        'my_topic_3_e31330c6'
    """
    token = _UNSAFE.sub("_", source).lstrip(".")
    if token != source:
        token = f"{token}_{hashlib.sha256(source.encode('utf-8')).hexdigest()[:8]}"
    return token


def file_name(source: str, first_offset: int, last_offset: int) -> str:
    """``<source>-<first:020d>-<last:020d>.parquet``."""
    if first_offset < 0 or last_offset < first_offset:
        raise SinkError(f"invalid offset range {first_offset}..{last_offset} for source={source!r}")
    return f"{source_token(source)}-{first_offset:020d}-{last_offset:020d}.parquet"


def parse_name(path: Path) -> ResultFile | None:
    """The source token and offset range encoded in a result file's name (None: not a result file)."""
    m = _NAME_RE.match(path.name)
    if m is None:
        return None
    return ResultFile(path, m["source"], int(m["first"]), int(m["last"]))


def results_dir(data_dir: Path) -> Path:
    return Path(data_dir) / RESULTS_DIR


def results_glob(data_dir: Path) -> str:
    """The glob DuckDB reads (``read_parquet(glob, hive_partitioning=true)``)."""
    return str(results_dir(data_dir) / "*" / "*" / "*.parquet")


def partition_dir(data_dir: Path, detector: str, date: str) -> Path:
    return results_dir(data_dir) / f"detector={detector}" / f"date={date}"


@contextlib.contextmanager
def _flock(path: Path, *, shared: bool) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def read_lock(data_dir: Path) -> Iterator[None]:
    """Hold while a query lists and reads the results: no file is removed meanwhile.

    Shared between readers (and between processes: it is an ``flock``); only the swaps of
    compaction and recovery take it exclusively, for a few system calls each. Where there are no
    results yet, or the lock file cannot be created (a read-only copy: nothing compacts there),
    it holds nothing.
    """
    path = results_dir(data_dir) / _READ_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        yield
        return
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdirs(path: Path) -> None:
    """Create ``path`` and fsync each parent whose entry list changed (so the directory survives)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        _fsync_dir(d.parent)


def _temp_name(final: Path) -> Path:
    """Where ``final`` is written before it is published: a name no reader globs."""
    return final.with_name(f".{final.name}.tmp")


def _write_hidden(table: pa.Table, final: Path, segments: Sequence[Segment]) -> Path:
    """Write ``table`` next to ``final`` under a name no reader globs; fsync it; return that name.

    A failed write (a full disk, a refused permission) removes the temp file and raises
    ``StorageError`` naming ``final`` and what to do.
    """
    meta = dict(table.schema.metadata or {})
    meta[SEGMENTS_KEY] = json.dumps([dataclasses.asdict(s) for s in segments]).encode("utf-8")
    table = table.replace_schema_metadata(meta)
    tmp = _temp_name(final)
    with writing(final, "Parquet results file", tmp), open(tmp, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def read_segments(path: Path) -> list[Segment]:
    """The input segments recorded in a result file (derived from its name for foreign files)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(SEGMENTS_KEY)
    if raw is not None:
        return [Segment(**s) for s in json.loads(raw)]
    parsed = parse_name(path)
    if parsed is None:
        raise SinkError(f"{path} is not a result file (no segments, no offset range in its name)")
    return [Segment(parsed.source, parsed.first, parsed.last, pq.read_metadata(path).num_rows)]


def _read(path: Path) -> pa.Table:
    # ParquetFile, not pq.read_table: the latter would add hive columns from the directory names.
    table = pq.ParquetFile(path).read()
    return table.replace_schema_metadata(None)


class ParquetSink:
    """Writes result tables as immutable Parquet files partitioned by detector and date.

    Example:
        >>> sink = ParquetSink(Path("data"))  # doctest: +SKIP
        >>> sink.write(table, source="events.0", first_offset=0, last_offset=99)  # doctest: +SKIP
        [PosixPath('data/results/detector=shop/date=2024-05-01/events.0-...-...99.parquet')]
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    def write(self, table: pa.Table, source: str, first_offset: int, last_offset: int) -> list[Path]:
        """Publish ``table`` (RESULT_SCHEMA rows from input offsets first..last of ``source``).

        One file per (detector, date of windowStart) partition, rows in input order. Rewriting the
        same range gives the same names (the files are replaced, never duplicated). Returns the paths.
        """
        name = file_name(source, first_offset, last_offset)
        if table.num_rows == 0:
            return []
        try:
            # One chunk: a worker's concatenated batches can have thousands, and filtering and
            # writing chunk by chunk is ~5x slower (measured: 242 vs 44 ms for 2,000 rows).
            table = table.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA).combine_chunks()
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SinkError(f"table does not match RESULT_SCHEMA: {exc}") from exc
        detectors = table.column("detectorName").to_numpy(zero_copy_only=False)
        days = table.column("windowStart").cast(pa.int64()).to_numpy() // _MS_PER_DAY
        written: list[Path] = []
        keys = [
            (str(det), int(day))
            for det in sorted(set(detectors.tolist()))
            for day in np.unique(days[detectors == det])
        ]
        for det, day in keys:
            part = table if len(keys) == 1 else table.filter(pa.array((detectors == det) & (days == day)))
            date = str(np.datetime64(day, "D"))
            pdir = partition_dir(self.data_dir, det, date)
            final = pdir / name
            # a full disk, a read-only or foreign directory: one line naming the path, no temp file
            with writing(final, "Parquet results file", _temp_name(final)):
                _mkdirs(pdir)
                tmp = _write_hidden(
                    part, final, [Segment(source_token(source), first_offset, last_offset, part.num_rows)]
                )
                with _flock(pdir / _WRITE_LOCK, shared=False):
                    os.replace(tmp, final)
                _fsync_dir(pdir)
            written.append(final)
        logger.debug(
            "parquet written source=%s first=%d last=%d files=%d rows=%d",
            source,
            first_offset,
            last_offset,
            len(written),
            table.num_rows,
        )
        return written

    def files(self, source: str | None = None) -> list[ResultFile]:
        """The published result files (of ``source`` if given), in path order."""
        token = source_token(source) if source is not None else None
        out = []
        for path in sorted(results_dir(self.data_dir).glob("detector=*/date=*/*.parquet")):
            parsed = parse_name(path)
            if parsed is not None and (token is None or parsed.source == token):
                out.append(parsed)
        return out

    def delete_after(self, source: str, offset: int) -> list[Path]:
        """Remove what ``source`` wrote from input offset ``offset`` on (used on recovery).

        Files whose first offset is ≥ ``offset`` are deleted; a compacted file that also holds
        earlier segments is rewritten with only those (segments are whole input batches, so the
        cut is exact). Returns the removed paths.
        """
        removed: list[Path] = []
        for rf in self.files(source):
            if rf.first >= offset:
                with (
                    _flock(rf.path.parent / _WRITE_LOCK, shared=False),
                    _flock(results_dir(self.data_dir) / _READ_LOCK, shared=False),
                ):
                    rf.path.unlink(missing_ok=True)
                _fsync_dir(rf.path.parent)
                removed.append(rf.path)
            elif rf.last >= offset:
                segments = read_segments(rf.path)
                if len(segments) > 1:
                    self._trim(rf, segments, offset)
                    removed.append(rf.path)
        if removed:
            logger.info("parquet recovery source=%s offset=%d removed=%d", source, offset, len(removed))
        return removed

    def _trim(self, rf: ResultFile, segments: list[Segment], offset: int) -> None:
        keep = [s for s in segments if s.first < offset]
        rows = sum(s.rows for s in keep)
        table = _read(rf.path).slice(0, rows)
        final = rf.path.with_name(
            f"{rf.source}-{keep[0].first:020d}-{max(s.last for s in keep):020d}.parquet"
        )
        with writing(final, "Parquet results file", _temp_name(final)):
            tmp = _write_hidden(table, final, keep)
            with (
                _flock(rf.path.parent / _WRITE_LOCK, shared=False),
                _flock(results_dir(self.data_dir) / _READ_LOCK, shared=False),
            ):
                os.replace(tmp, final)
                if final != rf.path:
                    rf.path.unlink(missing_ok=True)
            _fsync_dir(rf.path.parent)


@dataclasses.dataclass(frozen=True)
class CompactionResult:
    """One merge: the files it replaced and the file that holds their rows now."""

    partition: Path
    inputs: tuple[Path, ...]
    output: Path
    rows: int


def _remove_stale_temps(pdir: Path, older_than_s: float) -> None:
    """Temp files of writers that crashed (a live writer renames its temp within seconds)."""
    import time

    for tmp in pdir.glob(".*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                logger.info("removed stale temp file path=%s", tmp)
        except FileNotFoundError:
            continue


def compact(
    data_dir: Path,
    detector: str | None = None,
    date: str | None = None,
    min_files: int = 2,
    stale_tmp_s: float = 3600.0,
    on_partition: Callable[[int, int], None] | None = None,
) -> list[CompactionResult]:
    """Merge the small files of each partition, per source, into one file; query results stay the same.

    The newest file of each source is left alone (a live worker may still rewrite it). The merged
    file is named like any result file, after the offset range it covers
    (``<source>-<first>-<last>.parquet``), and keeps the input segments in its metadata.
    Guarantee: the merged file is written and fsynced under a hidden name first; then, holding the
    partition's write lock and the results read lock exclusively, the inputs are checked to be
    unchanged, the merged file is renamed into place and the inputs are unlinked. A reader holding
    :func:`read_lock` sees either all inputs or the merged file, never both and never neither; a
    reader that takes no lock can, during those few system calls, see a row twice or hit a missing
    file (retry). If an input changed meanwhile (recovery), the merge is abandoned, nothing lost.
    Temp files older than ``stale_tmp_s`` (left by a writer that crashed) are removed.
    ``on_partition(done, total)`` is told after each partition directory (a progress bar).
    """
    root = results_dir(data_dir)
    # The newest range of each source (over all partitions) may still be rewritten by a live worker
    # (the same name, more rows: e.g. its idle-window file): it is never compacted.
    newest: dict[str, int] = {}
    for f in ParquetSink(data_dir).files():
        newest[f.source] = max(newest.get(f.source, -1), f.first)
    det_glob = f"detector={detector}" if detector else "detector=*"
    date_glob = f"date={date}" if date else "date=*"
    results: list[CompactionResult] = []
    pdirs = [p for p in sorted(root.glob(f"{det_glob}/{date_glob}")) if p.is_dir()]
    for done, pdir in enumerate(pdirs, 1):
        _remove_stale_temps(pdir, stale_tmp_s)
        groups: dict[str, list[ResultFile]] = {}
        for path in sorted(pdir.glob("*.parquet")):
            parsed = parse_name(path)
            if parsed is not None and parsed.first < newest.get(parsed.source, -1):
                groups.setdefault(parsed.source, []).append(parsed)
        for token, files in sorted(groups.items()):
            if len(files) >= min_files:
                result = _merge(root, pdir, token, sorted(files, key=lambda f: f.first))
                if result is not None:
                    results.append(result)
        if on_partition is not None:
            on_partition(done, len(pdirs))
    return results


def _merge(root: Path, pdir: Path, token: str, files: list[ResultFile]) -> CompactionResult | None:
    for a, b in itertools.pairwise(files):
        if b.first <= a.last:
            raise SinkError(
                f"overlapping result files {a.path.name} and {b.path.name} in {pdir}: "
                "a duplicate write; remove one (delete_after) before compacting"
            )
    stats: dict[Path, tuple[int, int, int]] = {}
    tables: list[pa.Table] = []
    segments: list[Segment] = []
    for f in files:
        st = f.path.stat()
        stats[f.path] = (st.st_ino, st.st_mtime_ns, st.st_size)
        tables.append(_read(f.path))
        segments.extend(read_segments(f.path))
    merged = pa.concat_tables(tables)
    final = pdir / f"{token}-{files[0].first:020d}-{max(f.last for f in files):020d}.parquet"
    with writing(final, "compacted Parquet file", _temp_name(final)):
        return _swap_merged(root, pdir, token, files, stats, merged, final, segments)


def _swap_merged(
    root: Path,
    pdir: Path,
    token: str,
    files: list[ResultFile],
    stats: dict[Path, tuple[int, int, int]],
    merged: pa.Table,
    final: Path,
    segments: list[Segment],
) -> CompactionResult | None:
    """Write the merged file hidden, then swap it for the inputs if none of them changed."""
    tmp = _write_hidden(merged, final, segments)
    with _flock(pdir / _WRITE_LOCK, shared=False):
        for path, before in stats.items():
            try:
                now_st = path.stat()
                current: tuple[int, int, int] | None = (now_st.st_ino, now_st.st_mtime_ns, now_st.st_size)
            except FileNotFoundError:
                current = None
            if current != before:
                tmp.unlink(missing_ok=True)
                logger.warning(
                    "compaction abandoned partition=%s source=%s reason=input-changed file=%s",
                    pdir,
                    token,
                    path.name,
                )
                return None
        with _flock(root / _READ_LOCK, shared=False):
            os.replace(tmp, final)
            for f in files:
                if f.path != final:
                    f.path.unlink()
    _fsync_dir(pdir)
    # debug: `cutstream compact`, its one caller, prints each result itself (once)
    logger.debug(
        "compacted partition=%s source=%s inputs=%d rows=%d output=%s",
        pdir,
        token,
        len(files),
        merged.num_rows,
        final.name,
    )
    return CompactionResult(pdir, tuple(f.path for f in files), final, merged.num_rows)


# -- the worker's Parquet sink: results of input partitions, named after the offsets they cover ------


@dataclasses.dataclass
class _Pending:
    """One input partition's results that are not in a file yet."""

    first: int | None = None  # first input offset not covered by a file yet
    tables: list[pa.Table] = dataclasses.field(default_factory=list)
    idle: list[pa.Table] = dataclasses.field(default_factory=list)  # rows of the idle file at `first`
    written_at: float = 0.0


class ParquetPartitionSink(Sink):
    """Parquet for results of input partitions, exactly-once by file name (docs/ARCHITECTURE.md).

    A partition's results go to the source ``<topic>-<partition>`` in a file named after the input
    offsets they came from (the next file starts where the last one ended), every ``interval_s``
    (:meth:`tick`) and at each checkpoint (:meth:`flush`). Results of windows that the idle timeout
    closed with no input since the last file cover no new offset: they go to the *idle source*
    ``<topic>-<partition>.idle`` in the file ``[P, P]`` (P = the next offset); later such results at
    the same P rewrite that file with all of them, and the checkpoint at P carries them
    (:meth:`carried`), since a restore from P deletes the idle files from P on, like the input files.

    Args:
        writer: the Parquet writer of the data directory.
        interval_s: write a partition's pending results at least this often.
        on_write: called with (partition, rows, files) after each write.
    """

    name = "parquet"

    def __init__(
        self,
        writer: ParquetSink,
        interval_s: float = 2.0,
        on_write: Callable[[Partition, int, int], None] | None = None,
    ) -> None:
        self.writer = writer
        self.interval_s = interval_s
        self.on_write = on_write
        self._pending: dict[Partition, _Pending] = {}

    @staticmethod
    def source(tp: Partition) -> str:
        return f"{tp[0]}-{tp[1]}"

    def add(self, tp: Partition, batch: ResultBatch) -> None:
        self._pending.setdefault(tp, _Pending()).tables.append(batch.table())

    def tick(self, tp: Partition, next_offset: int, now: float) -> None:
        p = self._pending.get(tp)
        if p is not None and p.tables and now - p.written_at >= self.interval_s:
            self._write(tp, p, next_offset, now)

    def flush(self, tp: Partition, next_offset: int) -> None:
        p = self._pending.get(tp)
        if p is not None:
            self._write(tp, p, next_offset, time.monotonic())

    def restore(self, tp: Partition, offset: int, carried: bytes) -> int:
        """Delete the partition's files from ``offset`` on; the idle rows at ``offset`` come back."""
        source = self.source(tp)
        removed = len(self.writer.delete_after(source, offset)) + len(
            self.writer.delete_after(f"{source}.idle", offset)
        )
        self._pending[tp] = _Pending(first=offset, idle=_from_ipc(carried), written_at=time.monotonic())
        return removed

    def carried(self, tp: Partition) -> bytes:
        p = self._pending.get(tp)
        return _to_ipc(p.idle) if p is not None else b""

    def drop(self, tp: Partition) -> None:
        self._pending.pop(tp, None)

    def _write(self, tp: Partition, p: _Pending, next_offset: int, now: float) -> None:
        p.written_at = now
        if not p.tables or p.first is None:
            return
        new = p.tables
        if next_offset > p.first:
            source, last, rows = self.source(tp), next_offset - 1, new
        else:
            source, last, rows = f"{self.source(tp)}.idle", p.first, p.idle + new
        paths = self.writer.write(pa.concat_tables(rows) if len(rows) > 1 else rows[0], source, p.first, last)
        if next_offset > p.first:
            p.idle, p.first = [], next_offset
        else:
            p.idle = rows
        p.tables = []
        if self.on_write is not None:
            self.on_write(tp, sum(t.num_rows for t in new), len(paths))


def _to_ipc(tables: Sequence[pa.Table]) -> bytes:
    if not tables:
        return b""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, RESULT_SCHEMA) as writer:
        for t in tables:
            writer.write_table(t)
    return bytes(sink.getvalue().to_pybytes())


def _from_ipc(data: bytes) -> list[pa.Table]:
    if not data:
        return []
    return [pa.ipc.open_stream(pa.py_buffer(data)).read_all()]
