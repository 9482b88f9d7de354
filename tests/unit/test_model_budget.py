"""The model budget (``max_models``): the coldest models are parked on disk and read back when their
series return, so a bounded worker scores exactly like an unbounded one (streams/park.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import streams.pipeline
from streams.config import DetectorSpec, MeasureSpec
from streams.park import ModelPark
from streams.pipeline import DetectorPipeline

W = 60_000
MODEL = {
    "forest": {"n_trees": 8, "sample_size": 32, "seed": 3},
    "scoring": {"learning_points": 8, "learning_ms": 0},
}
COLUMNS = ["timeseriesId", "windowStart", "aggregatedMeasureValue", "rawScore", "anomalyScore",
           "anomalyDecision", "expectedValue", "modelStage"]  # fmt: skip


def _spec(max_models: int) -> DetectorSpec:
    return DetectorSpec(
        name="hosts",
        topic="metrics",
        dimensions=("host",),
        measures=(MeasureSpec(field="v", aggregation="avg", missing="skip"),),
        window_ms=W,
        allowed_lateness_ms=0,
        max_models=max_models,
        model=MODEL,
    )


def _pipe(max_models: int, root: Path | None) -> DetectorPipeline[int]:
    park = None if root is None else ModelPark("hosts", lambda tp: root / f"{tp}.models")
    return DetectorPipeline(_spec(max_models), park=park)


def _rounds(n_series: int, n_rounds: int, seed: int = 7) -> list[list[bytes]]:
    """Round r: one event in window r for a random third of the series (a few hot, most cold)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n_rounds):
        hot = np.arange(5)
        cold = rng.choice(np.arange(5, n_series), size=n_series // 3, replace=False)
        if r == 60:
            cold = np.union1d(cold, [7])
        events = []
        for i in np.concatenate([hot, cold]).tolist():
            v = 100.0 + 10.0 * np.sin(r / 5 + i) + rng.normal(0, 1)
            if r == 60 and i == 7:
                v = 400.0  # an anomaly on a series that has been parked in between
            events.append(json.dumps({"timestamp": r * W + 1 + i, "host": f"h{i:03d}", "v": v}).encode())
        out.append(events)
    return out


def _run(pipe: DetectorPipeline[int], rounds: list[list[bytes]], tp: int = 0) -> list[pa.Table]:
    tables = []
    for events in rounds:
        assert pipe.add(tp, events) == []
        scored = pipe.step()
        if scored is not None:
            tables.append(scored.results.table().select(COLUMNS))
        if pipe.spec.max_models and pipe.park is not None:
            assert len(pipe.detector) <= pipe.spec.max_models
    return tables


def _rows(tables: list[pa.Table]) -> list[dict[str, Any]]:
    return pa.concat_tables(tables).to_pylist()


@pytest.fixture
def park_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Park even one-point models (by default they are dropped: the series loses one point)."""
    monkeypatch.setattr(streams.pipeline, "PARK_MIN_POINTS", 1)


@pytest.mark.usefixtures("park_everything")
def test_a_bounded_pipeline_scores_exactly_like_an_unbounded_one(tmp_path: Path) -> None:
    rounds = _rounds(60, 90)
    free = _rows(_run(_pipe(0, None), rounds))
    pipe = _pipe(20, tmp_path)
    bounded = _rows(_run(pipe, rounds))
    assert bounded == free
    assert pipe.park is not None
    assert pipe.park.parked_total > 100 and pipe.park.reloaded_total > 100
    flagged = [r for r in bounded if r["timeseriesId"] and r["aggregatedMeasureValue"] == 400.0]
    assert flagged and flagged[0]["anomalyDecision"] == 1  # the parked series' model judged it


@pytest.mark.usefixtures("park_everything")
def test_a_checkpoint_names_parked_models_and_a_restore_reads_them(tmp_path: Path) -> None:
    rounds = _rounds(60, 90)
    free = _rows(_run(_pipe(0, None), rounds))
    first = _pipe(20, tmp_path)
    before = _run(first, rounds[:45])
    state = first.state(0)
    assert state.parked and set(state.parked) <= set(state.series)
    assert len(state.detector["keys"]) + len(state.parked) == len(state.series)
    # the worker's next checkpoint is durable: segments it no longer names may go, not these
    assert first.park is not None
    first.park.collect(0, state.parked.values())
    second = _pipe(20, tmp_path)  # another worker, the same data dir
    second.restore(0, state)
    after = _run(second, rounds[45:])
    assert _rows(before + after) == free


def test_segments_no_checkpoint_names_are_deleted(tmp_path: Path) -> None:
    pipe = _pipe(20, tmp_path)
    _run(pipe, _rounds(60, 40))
    assert pipe.park is not None
    folder = tmp_path / "0.models" / "hosts"
    named = set(pipe.state(0).parked.values())
    on_disk = {p.name for p in folder.iterdir()}
    assert named <= on_disk and len(on_disk) > len(named)  # some segments were read back since
    pipe.park.collect(0, named)
    assert {p.name for p in folder.iterdir()} == named


def test_one_point_series_are_dropped_not_parked(tmp_path: Path) -> None:
    """A unique id in a dimension: every event a new series. Memory stays at the budget, no disk."""
    pipe = _pipe(50, tmp_path)
    for r in range(40):
        events = [
            json.dumps({"timestamp": r * W + 1, "host": f"u{r}-{i}", "v": 1.0}).encode() for i in range(100)
        ]
        pipe.add(0, events)
        pipe.step()
        assert len(pipe.detector) <= 50
    assert pipe.park is not None and pipe.park.parked_total == 0
    assert pipe.models_dropped > 3000
    assert len(pipe.series_of(0)) <= 150  # the dropped series are forgotten, not listed
    assert not (tmp_path / "0.models").exists()


def test_a_dropped_series_that_comes_back_is_owned_again(tmp_path: Path) -> None:
    """The pipeline flags the series each partition owns by registry index: a drop must clear it."""
    pipe = _pipe(10, tmp_path)

    def event(r: int, host: str) -> bytes:
        return json.dumps({"timestamp": r * W + 1, "host": host, "v": 1.0}).encode()

    for r in range(4):  # 40 one-point series: most are dropped
        pipe.add(0, [event(r, f"u{r}-{i}") for i in range(10)])
        pipe.step()
    registry = pipe.parser.registry
    owned = set(pipe.series_of(0))
    gone = [i for i in range(registry.n_series) if registry.timeseries_id(i) not in owned]
    assert pipe.models_dropped > 0 and gone
    back = registry.timeseries_id(gone[0])
    pipe.add(0, [event(5, registry.dims(gone[0])[0]), event(7, "later")])
    scored = pipe.step()
    assert scored is not None and back in scored.results.keys
    assert back in pipe.series_of(0)
    assert back in pipe.state(0).detector["keys"]
