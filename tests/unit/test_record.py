"""sinks.record: the record is built once; the table, the JSON and the slices agree field for field."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from sinks.errors import SinkError
from sinks.record import RECORD_FIELDS, RESULT_SCHEMA, ResultBatch, build_results
from sinks.testing import result_table
from streams.config import DetectorSpec, MeasureSpec
from streams.pipeline import DetectorPipeline


def _scored() -> ResultBatch:
    spec = DetectorSpec(
        name="shop",
        topic="t",
        dimensions=("p",),
        measures=(MeasureSpec(field="q"),),
        window_ms=1000,
        model={
            "forest": {"n_trees": 5, "sample_size": 16, "shingle_size": 1},
            "scoring": {"learning_points": 3, "learning_ms": 0},
        },
    )
    pipe = DetectorPipeline(spec)
    events = [
        {"timestamp": w * 1000 + 1, "p": p, "q": float(w % 3) + (50.0 if w == 8 else 0.0)}
        for w in range(10)
        for p in "AB"
    ]
    pipe.add(0, [json.dumps(e).encode() for e in events])
    scored = pipe.step()
    assert scored is not None
    return scored.results


def test_json_messages_and_table_carry_the_same_values() -> None:
    batch = _scored()
    table = batch.table()
    assert table.schema == RESULT_SCHEMA and table.num_rows == len(batch) == 18
    decoded = [json.loads(m) for m in batch.messages()]
    for name in RESULT_SCHEMA.names:
        col = table.column(name)
        expected = col.cast("int64").to_pylist() if name == "windowStart" else col.to_pylist()
        assert [d[name] for d in decoded] == expected, name
    assert batch.keys == table.column("timeseriesId").to_pylist()


def test_slices_share_the_batch() -> None:
    batch = _scored()
    part = batch.slice(4, 9)
    assert part.table().equals(batch.table().slice(4, 5))
    assert part.messages() == batch.messages()[4:9] and part.keys == batch.keys[4:9]
    assert part.slice(1, 3).messages() == batch.messages()[5:7]


def test_a_table_round_trips_through_the_batch() -> None:
    table = result_table(values=[1.0, float("nan")], scores=[10.0, 90.0])
    batch = ResultBatch.from_table(table)
    nan_columns = ["aggregatedMeasureValue", "expectedValue", "expectedLow", "expectedHigh"]  # NaN != NaN
    assert batch.table().drop_columns(nan_columns).equals(table.drop_columns(nan_columns))
    first, second = (json.loads(m) for m in batch.messages())
    assert second["aggregatedMeasureValue"] is None and second["anomalyDecision"] == 1
    assert first["windowStart"] == 1_714_521_600_000


@dataclass
class _Windows:
    timeseries_id: list[str]
    measure: list[str]
    dimension_lists: list[list[dict[str, str]]]
    window_start_ms: np.ndarray
    window_end_ms: np.ndarray
    value: np.ndarray
    missing: np.ndarray

    def __len__(self) -> int:
        return len(self.timeseries_id)


@dataclass
class _Scores:
    anomaly_score: np.ndarray
    threshold: np.ndarray
    decision: np.ndarray
    confidence: np.ndarray
    inference: np.ndarray
    processed_points: np.ndarray
    expected_value: np.ndarray
    warm_started: np.ndarray
    raw_score: np.ndarray | None = None


def _plain(n: int = 2) -> tuple[_Windows, _Scores]:
    z = np.zeros(n)
    windows = _Windows(
        ["s"] * n,
        ["q"] * n,
        [[{"name": "p", "value": "A"}]] * n,
        np.arange(n) * 60_000,
        np.arange(1, n + 1) * 60_000,
        z,
        z.astype(bool),
    )
    scores = _Scores(z, z + 70, z.astype(np.int8), z, z.astype(bool), z.astype(np.int64), z, z.astype(bool))
    return windows, scores


def test_every_score_field_comes_from_the_score_batch_by_name() -> None:
    """A record field declared with ``score=`` is read from that attribute: one line adds one."""
    assert {f.score for f in RECORD_FIELDS if f.score} >= {"anomaly_score", "raw_score", "warm_started"}
    windows, scores = _plain()
    table = build_results("shop", windows, scores)  # raw_score missing: a nullable field is null
    assert (
        table.column("rawScore").null_count == 2
        and table.column("modelStage").to_pylist() == ["LEARNING"] * 2
    )
    del scores.warm_started  # a required one is refused with its name
    with pytest.raises(SinkError, match="warm_started"):
        ResultBatch.build("shop", windows, scores)
