"""History files → events: every valid row becomes the event a live producer would send; bad rows are
reported with their file and row number."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streams.config import DetectorSpec
from streams.errors import StreamsError
from streams.history import event_key, history_files, read_history

SPEC = DetectorSpec(
    name="shop",
    topic="orders",
    timestamp_field="ts",
    dimensions=("item",),
    measures=({"field": "qty", "aggregation": "sum"},),
)


def test_csv_rows_become_events_and_bad_rows_are_reported(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text(
        "ts,item,qty,extra\n"
        "2026-01-01 00:00:00,A,3,x\n"
        "not-a-time,A,4,x\n"
        "1767225660000,B,5.5,y\n"
        "2026-01-01T00:02:00Z,B,abc,z\n"
    )
    batches = list(read_history(f, SPEC))
    events = [json.loads(v) for b in batches for v in b.events()[1]]
    assert events == [
        {"ts": 1767225600000, "item": "A", "qty": 3.0},
        {"ts": 1767225660000, "item": "B", "qty": 5.5},
    ]
    assert [k for b in batches for k in b.events()[0]] == [b"item=A", b"item=B"]
    bad = [b for batch in batches for b in batch.bad]
    assert [(b.row, b.reason.split()[0]) for b in bad] == [(2, "bad"), (4, "non-numeric")]
    assert "not-a-time" in bad[0].reason and "abc" in bad[1].reason
    assert [r for b in batches for r in b.rows.tolist()] == [1, 3]


def test_parquet_with_native_types_and_resume(tmp_path: Path) -> None:
    d = tmp_path / "hist"
    d.mkdir()
    for part in range(2):
        ts = pa.array(
            [1767225600000 + 60000 * (part * 3 + i) for i in range(3)], pa.timestamp("ms", tz="UTC")
        )
        pq.write_table(
            pa.table({"ts": ts, "item": ["A", "B", "A"], "qty": [1, 2, 3]}), d / f"p{part}.parquet"
        )
    assert [p.name for p in history_files(d)] == ["p0.parquet", "p1.parquet"]
    all_rows = [(b.file_index, r) for b in read_history(d, SPEC) for r in b.rows.tolist()]
    assert all_rows == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    resumed = [(b.file_index, r) for b in read_history(d, SPEC, start=(0, 3)) for r in b.rows.tolist()]
    assert resumed == all_rows[2:]


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text("time,item,qty\n2026-01-01 00:00:00,A,1\n")
    with pytest.raises(StreamsError, match="no column 'ts'"):
        list(read_history(f, SPEC))


def test_event_key_is_order_independent() -> None:
    assert event_key([("b", "2"), ("a", "1")]) == event_key([("a", "1"), ("b", "2")]) == b"a=1&b=2"


def test_empty_measure_cells_are_absent_measures_not_bad_rows(tmp_path: Path) -> None:
    """An empty cell is what a live event without the field is: the row still counts for the
    other measures (and for the window's event count); a row with no measure at all is bad."""
    spec = DetectorSpec(
        name="web",
        topic="reqs",
        timestamp_field="ts",
        dimensions=("host",),
        measures=({"field": "n", "aggregation": "sum"}, {"field": "lat", "aggregation": "avg"}),
    )
    f = tmp_path / "h.csv"
    f.write_text("ts,host,n,lat\n1767225600000,a,3,12.5\n1767225601000,a,0,\n1767225602000,a,,\n")
    batches = list(read_history(f, spec))
    events = [json.loads(v) for b in batches for v in b.events()[1]]
    assert events == [
        {"ts": 1767225600000, "host": "a", "n": 3.0, "lat": 12.5},
        {"ts": 1767225601000, "host": "a", "n": 0.0},
    ]
    bad = [b for batch in batches for b in batch.bad]
    assert [(b.row, b.reason) for b in bad] == [(3, "no measure value (every measure field is empty)")]
    # Parquet nulls are the same thing.
    p = tmp_path / "h.parquet"
    pq.write_table(
        pa.table(
            {
                "ts": [1767225600000, 1767225601000],
                "host": ["a", "a"],
                "n": [1, 2],
                "lat": pa.array([4.0, None]),
            }
        ),
        p,
    )
    events = [json.loads(v) for b in read_history(p, spec) for v in b.events()[1]]
    assert events[1] == {"ts": 1767225601000, "host": "a", "n": 2.0}
