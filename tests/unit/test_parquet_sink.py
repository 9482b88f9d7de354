"""The Parquet sink: partitioning, deterministic names, atomic publication, recovery and compaction."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from sinks.errors import SinkError
from sinks.parquet import ParquetSink, compact, parse_name, read_segments, results_glob
from sinks.testing import result_table

DAY_MS = 86_400_000
START = 1_714_521_600_000  # 2024-05-01 00:00 UTC


def _rows(data_dir: Path) -> list[tuple]:
    """Every row as DuckDB sees it (hive partitioning on), sorted: the query result to compare."""
    with duckdb.connect() as con:
        return con.execute(
            "SELECT detector, CAST(date AS VARCHAR), detectorName, timeseriesId, windowStart, "
            "aggregatedMeasureValue, anomalyScore FROM read_parquet(?, hive_partitioning=true) "
            "ORDER BY ALL",
            [results_glob(data_dir)],
        ).fetchall()


def _batch(i: int, detector: str = "shop", n: int = 10) -> pa.Table:
    return result_table(detector=detector, start_ms=START + i * n * 60_000, values=list(range(n)))


def test_write_partitions_by_detector_and_date(tmp_path: Path) -> None:
    # 3 windows before midnight, 3 after, for two detectors.
    a = result_table(detector="shop", start_ms=START + DAY_MS - 3 * 60_000, values=[1, 2, 3, 4, 5, 6])
    b = result_table(detector="web", dimensions={"page": "/"}, start_ms=START, values=[7, 8])
    paths = ParquetSink(tmp_path).write(pa.concat_tables([a, b]), "events.0", 100, 199)
    rel = sorted(str(p.relative_to(tmp_path)) for p in paths)
    name = "events.0-00000000000000000100-00000000000000000199.parquet"
    assert rel == [
        f"results/detector=shop/date=2024-05-01/{name}",
        f"results/detector=shop/date=2024-05-02/{name}",
        f"results/detector=web/date=2024-05-01/{name}",
    ]
    rows = _rows(tmp_path)
    assert len(rows) == 8
    # The hive key `detector` and the record's own `detectorName` coexist and agree.
    assert all(r[0] == r[2] for r in rows)
    assert sorted({(r[0], r[1]) for r in rows}) == [
        ("shop", "2024-05-01"),
        ("shop", "2024-05-02"),
        ("web", "2024-05-01"),
    ]
    # No temporary file is left behind.
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_rewrite_of_same_input_replaces_instead_of_duplicating(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    first = sink.write(_batch(0), "events.0", 0, 9)
    before = _rows(tmp_path)
    again = sink.write(_batch(0), "events.0", 0, 9)
    assert first == again
    assert _rows(tmp_path) == before
    assert len(list(tmp_path.rglob("*.parquet"))) == 1


def test_temporary_names_are_not_visible_to_duckdb(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    (path,) = sink.write(_batch(0), "events.0", 0, 9)
    # A writer that died mid-write leaves its hidden temp file: readers must not see it.
    (path.parent / f".{path.name}.tmp").write_bytes(b"PAR1 partial garbage")
    assert len(_rows(tmp_path)) == 10


def test_source_is_sanitised_and_distinct(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    (p1,) = sink.write(_batch(0), "my topic/0", 0, 9)
    (p2,) = sink.write(_batch(1), "my_topic_0", 10, 19)
    assert "/" not in p1.name and " " not in p1.name
    assert parse_name(p1).source != parse_name(p2).source
    assert [f.path for f in sink.files("my topic/0")] == [p1]


def test_schema_mismatch_is_a_sink_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="RESULT_SCHEMA"):
        ParquetSink(tmp_path).write(pa.table({"x": [1]}), "events.0", 0, 0)
    with pytest.raises(SinkError, match="offset range"):
        ParquetSink(tmp_path).write(_batch(0), "events.0", 5, 4)


def test_delete_after_removes_uncommitted_files_of_that_source_only(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    for i in range(4):
        sink.write(_batch(i), "events.0", i * 10, i * 10 + 9)
    sink.write(_batch(9), "events.1", 0, 9)
    removed = sink.delete_after("events.0", 20)
    assert sorted(parse_name(p).first for p in removed) == [20, 30]
    assert [f.first for f in sink.files("events.0")] == [0, 10]
    assert len(sink.files("events.1")) == 1
    assert len(_rows(tmp_path)) == 30


def test_compaction_keeps_query_results_identical(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    for i in range(6):
        sink.write(pa.concat_tables([_batch(i), _batch(i, detector="web")]), "events.0", i * 10, i * 10 + 9)
    sink.write(_batch(7), "events.1", 0, 9)
    before = _rows(tmp_path)
    n_files = len(list(tmp_path.rglob("*.parquet")))
    results = compact(tmp_path)
    # One merge per partition of events.0; the newest file of each source is left alone (a live
    # worker may still rewrite it), so events.1's single file and events.0's 50-59 stay.
    assert len(results) == 2
    assert _rows(tmp_path) == before
    assert len(list(tmp_path.rglob("*.parquet"))) == n_files - 8
    for r in results:
        assert r.output.exists() and not any(p.exists() for p in r.inputs)
        assert r.output.name == "events.0-00000000000000000000-00000000000000000049.parquet"
        assert [(s.first, s.last, s.rows) for s in read_segments(r.output)] == [
            (i * 10, i * 10 + 9, 10) for i in range(5)
        ]
    # Compacting again changes nothing.
    assert compact(tmp_path) == []
    assert _rows(tmp_path) == before


def test_delete_after_trims_a_compacted_file_exactly(tmp_path: Path) -> None:
    plain, compacted = tmp_path / "plain", tmp_path / "compacted"
    for d in (plain, compacted):
        sink = ParquetSink(d)
        for i in range(5):
            sink.write(_batch(i), "events.0", i * 10, i * 10 + 9)
    compact(compacted)
    ParquetSink(plain).delete_after("events.0", 30)
    removed = ParquetSink(compacted).delete_after("events.0", 30)
    assert len(removed) == 2  # the compacted 0-39 (trimmed) and the newest 40-49 (deleted)
    assert _rows(compacted) == _rows(plain)
    assert len(_rows(plain)) == 30
    (f,) = ParquetSink(compacted).files("events.0")
    assert (f.first, f.last) == (0, 29)
    # Replaying the deleted input rewrites it; the result equals the original run.
    ParquetSink(compacted).write(_batch(3), "events.0", 30, 39)
    ParquetSink(plain).write(_batch(3), "events.0", 30, 39)
    assert _rows(compacted) == _rows(plain)


def test_compaction_refuses_overlapping_files(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write(_batch(0), "events.0", 0, 9)
    sink.write(_batch(0), "events.0", 5, 14)
    sink.write(_batch(1), "events.0", 15, 24)
    with pytest.raises(SinkError, match="overlapping"):
        compact(tmp_path)


def test_newest_file_of_a_source_is_not_compacted(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write(_batch(0), "events.0.idle", 10, 10)
    sink.write(_batch(1), "events.0.idle", 20, 20)
    assert compact(tmp_path) == []  # 20 is the newest: a live worker may rewrite it
    sink.write(_batch(2), "events.0.idle", 30, 30)
    (merged,) = compact(tmp_path)
    assert [parse_name(p).first for p in merged.inputs] == [10, 20]
    # The worker rewrites its newest file with more rows: no duplicate appears.
    sink.write(pa.concat_tables([_batch(2), _batch(3)]), "events.0.idle", 30, 30)
    rows = _rows(tmp_path)
    assert len(rows) == 40 == len(set(rows))


def test_read_lock_needs_no_results_and_creates_nothing(tmp_path: Path) -> None:
    from sinks.parquet import read_lock

    with read_lock(tmp_path / "nowhere"):
        pass
    assert not (tmp_path / "nowhere").exists()


def test_compact_removes_stale_temp_files_only(tmp_path: Path) -> None:
    import os

    (path,) = ParquetSink(tmp_path).write(_batch(0), "events.0", 0, 9)
    stale, fresh = path.parent / ".dead.parquet.tmp", path.parent / ".live.parquet.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (1, 1))
    compact(tmp_path)
    assert not stale.exists() and fresh.exists() and path.exists()
