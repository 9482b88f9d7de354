"""History input: every timestamp type and unit, CSV rows reported by their file line, bad rows skipped."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streams.history as history
from streams.config import DetectorSpec
from streams.errors import StreamsError
from streams.history import BadRow, read_history

SPEC = DetectorSpec(
    name="shop",
    topic="orders",
    timestamp_field="ts",
    dimensions=("item",),
    measures=({"field": "qty", "aggregation": "sum"},),
)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _read(path: Path, spec: DetectorSpec = SPEC, chunk_rows: int = 100_000) -> tuple[list, list[BadRow]]:
    """(valid rows as (row, line, epoch ms, item, qty), bad rows)."""
    ok, bad = [], []
    for b in read_history(path, spec, chunk_rows=chunk_rows):
        lines = b.lines.tolist() if b.lines is not None else [None] * len(b)
        items = b.dimensions[0].to_pylist() if spec.dimensions else [None] * len(b)
        ok += zip(
            b.rows.tolist(), lines, b.timestamps_ms.tolist(), items, b.measures[:, 0].tolist(), strict=True
        )
        bad += b.bad
    return ok, bad


def test_csv_rows_are_reported_by_their_line(tmp_path: Path) -> None:
    """Line 1 is the header; blank lines and a quoted value spanning two lines are counted; a row
    with too few or too many fields, or an unparseable value, is skipped and reported."""
    f = tmp_path / "h.csv"
    f.write_text(
        "ts,item,qty\n"  # 1
        "2026-01-01 00:00:00,A,1\n"  # 2
        "\n"  # 3 blank: not a row
        "2026-01-01 00:01:00,A\n"  # 4 too few fields
        '2026-01-01 00:02:00,"A\nB",3\n'  # 5-6 one row
        "2026-01-01 00:03:00,A,3,4\n"  # 7 too many
        "yesterday,A,3\n"  # 8 bad timestamp
        "2026-01-01 00:04:00,A,x\n"  # 9 bad measure
        "2026-01-01 00:05:00,B,5\n"  # 10
        "2026-01-01 00:06:00,B\n"  # 11 too few, last line
    )
    ok, bad = _read(f)
    assert [(row, line, item, qty) for row, line, _, item, qty in ok] == [
        (1, 2, "A", 1.0),
        (3, 5, "A\nB", 3.0),
        (7, 10, "B", 5.0),
    ]
    assert [(b.line, b.row) for b in bad] == [(4, 2), (7, 4), (8, 5), (9, 6), (11, 8)]
    assert [str(b).split(": ", 1)[0] for b in bad] == [f"{f}:{n}" for n in (4, 7, 8, 9, 11)]
    assert "2 fields where the header has 3" in bad[0].reason and "00:01:00,A" in bad[0].reason
    assert "4 fields where the header has 3" in bad[1].reason
    assert "yesterday" in bad[2].reason and "'x'" in bad[3].reason


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
@pytest.mark.parametrize("block", [7, 64, 1 << 22])
def test_lines_are_right_across_blocks_chunks_and_line_endings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int, block: int
) -> None:
    """The line finder reads the file in blocks (numpy until the first quote, the csv module after):
    line numbers must not depend on where the blocks or the chunks fall."""
    monkeypatch.setattr(history, "_SCAN_BLOCK", block)
    rows, want_ok, want_bad = ["ts,item,qty"], [], []
    for i in range(40):
        line = len("\n".join(rows).split("\n")) + 1  # the line this row starts on
        ts = f"2026-01-01 00:{i:02d}:00"
        if i % 7 == 3:
            rows.append(f"{ts},A")
            want_bad.append(line)
        elif i % 11 == 5 and i > 20:
            rows.append(f'{ts},"q\nq",{i}')  # quotes from here on: the csv module's part
            want_ok.append(line)
        elif i % 5 == 4:
            rows.append("")  # a blank line
            continue
        else:
            rows.append(f"{ts},A,{i}")
            want_ok.append(line)
    for eol in ("\n", "\r\n"):
        f = tmp_path / f"h{len(eol)}.csv"
        f.write_bytes((eol.join(rows) + eol).encode())
        ok, bad = _read(f, chunk_rows=chunk_rows)
        assert [line for _, line, *_ in ok] == want_ok
        assert [b.line for b in bad] == want_bad


def test_text_that_is_not_utf8_is_a_bad_row_not_a_crash(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_bytes(
        b"ts,item,qty\n2026-01-01 00:00:00,A,1\n2026-01-01 00:01:00,\xff\xfe,2\n2026-01-01 00:02:00,B,3\n"
    )
    ok, bad = _read(f)
    assert [item for *_, item, _ in ok] == ["A", "B"]
    assert [(b.line, "not UTF-8" in b.reason) for b in bad] == [(3, True)]


def test_every_arrow_timestamp_type_gives_the_same_times(tmp_path: Path) -> None:
    """Parquet columns as DuckDB, pandas or Spark write them: every unit, with or without a zone,
    dates, and epoch numbers of every unit (told apart by magnitude)."""
    times = [T0 + k * 86_400_000 for k in range(3)]  # whole days, so dates can hold them too
    columns = {
        f"timestamp[{u}, {tz}]": pa.array([t * m // d for t in times], pa.int64()).cast(
            pa.timestamp(u, tz=tz)
        )
        for u, m, d in (("s", 1, 1000), ("ms", 1, 1), ("us", 1000, 1), ("ns", 1_000_000, 1))
        for tz in (None, "UTC", "Europe/Paris")
    }
    columns["date32"] = pa.array([dt.date(2026, 1, 1 + k) for k in range(3)], pa.date32())
    columns["date64"] = pa.array([dt.date(2026, 1, 1 + k) for k in range(3)], pa.date64())
    for unit, mul, div in (("s", 1, 1000), ("ms", 1, 1), ("us", 1000, 1), ("ns", 1_000_000, 1)):
        columns[f"int64 epoch {unit}"] = pa.array([t * mul // div for t in times], pa.int64())
        columns[f"float epoch {unit}"] = pa.array([t * mul / div for t in times], pa.float64())
    columns["decimal epoch s"] = pa.array([decimal.Decimal(t // 1000) for t in times], pa.decimal128(12, 0))
    columns["iso text"] = pa.array([dt.datetime.fromtimestamp(t / 1000, dt.UTC).isoformat() for t in times])
    columns["dictionary text"] = columns["iso text"].dictionary_encode()
    for name, col in columns.items():
        f = tmp_path / "h.parquet"
        pq.write_table(pa.table({"ts": col, "item": ["A"] * 3, "qty": [1, 2, 3]}), f)
        ok, bad = _read(f)
        assert [t for _, _, t, *_ in ok] == times, name
        assert not bad and [line for _, line, *_ in ok] == [None] * 3


def test_epoch_units_in_csv_detected_or_declared(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text(
        "ts,item,qty\n"
        f"{T0 // 1000},A,1\n"  # seconds
        f"{T0 // 1000}.250,A,1\n"  # seconds with a fraction
        f"{T0},A,1\n"  # milliseconds
        f"{T0 * 1000},A,1\n"  # microseconds
        f"{T0 * 1_000_000},A,1\n"  # nanoseconds: 19 digits
    )
    ok, bad = _read(f)
    assert not bad
    assert [t for _, _, t, *_ in ok] == [T0, T0 + 250, T0, T0, T0]

    # 1972-01-01 in milliseconds is 63072000000, which auto reads as seconds (year 3968): declare it.
    old = tmp_path / "old.csv"
    old.write_text("ts,item,qty\n63072000000,A,1\n-86400,A,1\n")
    assert [t for _, _, t, *_ in _read(old)[0]] == [63_072_000_000_000, -86_400_000]
    declared = SPEC.model_copy(update={"timestamp_unit": "ms"})
    assert [t for _, _, t, *_ in _read(old, declared)[0]] == [63_072_000_000, -86_400]
    seconds = SPEC.model_copy(update={"timestamp_unit": "s"})
    assert [t for _, _, t, *_ in _read(f, seconds)[0]][:2] == [T0, T0 + 250]
    assert [b.line for b in _read(f, seconds)[1]] == [4, 5, 6]  # ms, us, ns as seconds: beyond 9999


def test_auto_units_are_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "h.csv"
    f.write_text(f"ts,item,qty\n{T0 // 1000},A,1\n")
    with caplog.at_level("INFO", logger="streams.history"):
        _read(f)
    assert "epoch timestamps read as seconds" in caplog.text and str(f) in caplog.text


def test_columns_of_a_type_that_cannot_be_used_are_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "h.parquet"
    pq.write_table(pa.table({"ts": pa.array([1], pa.time64("us")), "item": ["A"], "qty": [1]}), f)
    with pytest.raises(StreamsError, match=r"h.parquet: column 'ts' is time64\[us\]"):
        _read(f)
    pq.write_table(pa.table({"ts": [T0], "item": [[1, 2]], "qty": [1]}), f)
    with pytest.raises(StreamsError, match=r"h.parquet: column 'item' is list<.*>; a dimension must be"):
        _read(f)
    f.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StreamsError, match=r"h\.parquet: cannot be read as Parquet"):
        _read(f)
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    with pytest.raises(StreamsError, match=r"e\.csv: cannot be read as CSV"):
        _read(empty)


def test_many_quoted_rows_keep_their_lines(tmp_path: Path) -> None:
    """Past the csv module's first hand-over of rows (65,536), lines still match."""
    n = 70_000
    f = tmp_path / "h.csv"
    body = "".join(f'"2026-01-01 00:00:00",A,{i}\n' if i != 69_000 else "x,A\n" for i in range(n))
    f.write_text("ts,item,qty\n" + body)
    ok, bad = _read(f, chunk_rows=30_000)
    assert [b.line for b in bad] == [69_002]
    lines = [line for _, line, *_ in ok]
    assert (
        len(lines) == n - 1
        and lines[0] == 2
        and lines[-1] == n + 1
        and lines[68_999] == 69_001
        and lines[69_000] == 69_003
    )


def test_timestamps_at_the_edge_of_int64_are_bad_rows(tmp_path: Path) -> None:
    """Seconds that would wrap around int64 once in milliseconds are bad rows, never a wrong time."""
    from streams.timestamps import epoch_ms

    extreme = pa.array([2**62, -(2**62), T0 // 1000], pa.int64()).cast(pa.timestamp("s"))
    ms, valid = epoch_ms(extreme)  # (Parquet stores no seconds: a column read from Arrow IPC, say)
    assert valid.tolist() == [False, False, True] and ms[2] == T0
    f2 = tmp_path / "h.csv"
    f2.write_text(f"ts,item,qty\n{2**62},A,1\n{-(2**63)},A,1\n{10**30},A,1\n{T0},A,1\n")
    ok, bad = _read(f2, SPEC.model_copy(update={"timestamp_unit": "s"}))
    assert [b.line for b in bad] == [2, 3, 4, 5]  # the last: ms read as seconds, beyond 9999
    ok, bad = _read(f2)
    # as nanoseconds (their magnitude) an int64 is a time (1677 to 2262); -2**63 and 10**30 are bad
    assert [t for _, _, t, *_ in ok] == [2**62 // 10**6, T0]
    assert [b.line for b in bad] == [3, 4]
