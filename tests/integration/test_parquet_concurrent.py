"""Writes and compactions while DuckDB reads: no error, no partial file, no duplicate, counts monotone."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from sinks.parquet import ParquetSink, compact, read_lock, results_glob
from sinks.testing import result_table

pytestmark = pytest.mark.integration

ROWS = 20
BATCHES = 60
START = 1_714_521_600_000


def _batch(i: int) -> pa.Table:
    # Two detectors, one day: each batch adds ROWS // 2 rows to each detector's partition (one file
    # each), so a partially visible file would show as a count that is not a multiple of ROWS // 2.
    # (Files appear one by one: a batch spanning partitions shows up partition by partition.)
    half = ROWS // 2
    return pa.concat_tables(
        [
            result_table(detector=d, start_ms=START + i * half * 60_000, values=[float(i)] * half)
            for d in ("shop", "web")
        ]
    )


def test_readers_never_see_partial_or_duplicated_results(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write(_batch(0), "events.0", 0, ROWS - 1)
    done = threading.Event()
    errors: list[BaseException] = []
    compactions: list[int] = []

    def writer() -> None:
        try:
            for i in range(1, BATCHES):
                sink.write(_batch(i), "events.0", i * ROWS, i * ROWS + ROWS - 1)
                if i % 10 == 0:
                    compactions.append(len(compact(tmp_path)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    seen: list[tuple[int, int, int, int]] = []
    query = (
        "SELECT count(*), count(DISTINCT (detectorName, timeseriesId, windowStart)), "
        "count(*) FILTER (detector = 'shop'), count(*) FILTER (detector = 'web') "
        "FROM read_parquet(?, hive_partitioning=true)"
    )
    thread = threading.Thread(target=writer)
    with duckdb.connect() as con:
        thread.start()
        while not done.is_set() or len(seen) < 5:
            with read_lock(tmp_path):
                seen.append(con.execute(query, [results_glob(tmp_path)]).fetchone())
        thread.join()
        with read_lock(tmp_path):
            final = con.execute(query, [results_glob(tmp_path)]).fetchone()
    assert not errors, errors
    assert all(c > 0 for c in compactions) and len(compactions) == 5
    assert all(total == distinct for total, distinct, _, _ in seen), "a row was visible twice"
    for column in (2, 3):
        counts = [row[column] for row in seen]
        assert all(c % (ROWS // 2) == 0 for c in counts), "a partially written file was visible"
        assert counts == sorted(counts), "a row went missing"
        assert len(set(counts)) > 3  # the reader really ran concurrently with the writer
    assert final == (BATCHES * ROWS, BATCHES * ROWS, BATCHES * ROWS // 2, BATCHES * ROWS // 2)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_compaction_under_a_reader_keeps_results_identical(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    for i in range(BATCHES // 2):
        sink.write(_batch(i), f"events.{i % 3}", i * ROWS, i * ROWS + ROWS - 1)
    sql = (
        "SELECT detector, detectorName, timeseriesId, windowStart, aggregatedMeasureValue "
        "FROM read_parquet(?, hive_partitioning=true) ORDER BY ALL"
    )
    with duckdb.connect() as con:
        before = con.execute(sql, [results_glob(tmp_path)]).fetchall()
        assert len(compact(tmp_path)) == 6  # 2 detectors × 3 sources
        after = con.execute(sql, [results_glob(tmp_path)]).fetchall()
    assert after == before and len(before) == BATCHES // 2 * ROWS
    assert len(list(tmp_path.rglob("*.parquet"))) == 12  # + the newest file of each source, left alone
