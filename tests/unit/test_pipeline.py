"""streams.pipeline: one chain of stages for every driver; partitions own their models."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from streams.config import DetectorSpec, MeasureSpec
from streams.pipeline import DetectorPipeline

W = 1000
MODEL = {
    "forest": {"n_trees": 5, "sample_size": 16, "shingle_size": 1, "seed": 2},
    "scoring": {"learning_points": 4, "learning_ms": 0},
}


def _spec(**kw: Any) -> DetectorSpec:
    base: dict[str, Any] = {
        "name": "shop",
        "topic": "orders",
        "dimensions": ("product",),
        "measures": (MeasureSpec(field="q"), MeasureSpec(field="n", aggregation="count")),
        "window_ms": W,
        "model": MODEL,
    }
    base.update(kw)
    return DetectorSpec(**base)


def _ev(ts: int, product: str, q: float) -> bytes:
    return json.dumps({"timestamp": ts, "product": product, "q": q}).encode()


def _stream(products: tuple[str, ...], windows: int) -> list[tuple[int, str, float]]:
    return [(w * W + 10 + i, p, float(w % 5 + i)) for w in range(windows) for i, p in enumerate(products)]


def test_columns_and_json_give_the_same_records() -> None:
    """History rows as columns (no JSON) and the same rows as live JSON events: record for record."""
    rows = _stream(("A", "B", "C"), 12)
    live, hist = DetectorPipeline(_spec()), DetectorPipeline(_spec())
    assert live.add(0, [_ev(*r) for r in rows]) == []
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    assert hist.add_columns(0, ts, [pa.array([r[1] for r in rows])], np.array([[r[2]] for r in rows])) == []
    a, b = live.step(), hist.step()
    assert a is not None and b is not None
    assert a.results.table().equals(b.results.table())
    assert a.results.messages() == b.results.messages()


def test_one_step_for_all_partitions_and_each_owns_its_series() -> None:
    pipe = DetectorPipeline(_spec())
    for p, product in ((0, "A"), (1, "B")):
        pipe.add(p, [_ev(t, product, 1.0) for t, _, _ in _stream((product,), 6)])
    scored = pipe.step()
    assert scored is not None and scored.series_split == 0
    assert [(tp, b - a) for tp, a, b in scored.spans] == [(0, 10), (1, 10)]  # 5 windows x 2 measures
    per_part = dict(scored.by_partition())
    assert {d[0]["value"] for d in per_part[1].table().column("dimensionList").to_pylist()} == {"B"}
    assert len(pipe.series_of(0)) == len(pipe.series_of(1)) == 2
    # the same series arriving on partition 1 is scored, counted as split, and stays partition 0's
    pipe.add(1, [_ev(6 * W + 5, "A", 1.0), _ev(8 * W, "B", 1.0)])
    again = pipe.step([1])
    assert again is not None and again.series_split == 2
    pipe.drop(0)  # evicts every model partition 0 listed: A's two
    assert len(pipe.detector) == 2 and pipe.partitions() == [1]


def test_state_restores_windows_and_models_exactly() -> None:
    rows = _stream(("A", "B"), 20)
    ref, first = DetectorPipeline(_spec()), DetectorPipeline(_spec())
    ref.add(0, [_ev(*r) for r in rows])
    ref_scored = ref.step()
    first.add(0, [_ev(*r) for r in rows[:20]])
    first.step()
    state = first.state(0)
    second = DetectorPipeline(_spec())
    second.restore(0, state)
    second.add(0, [_ev(*r) for r in rows[20:]])
    tail = second.step()
    assert ref_scored is not None and tail is not None
    n = len(tail.results)
    assert tail.results.table().equals(ref_scored.results.table().slice(len(ref_scored.results) - n))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the point of the test
def test_non_finite_aggregates_are_dropped_and_counted() -> None:
    pipe = DetectorPipeline(_spec(measures=(MeasureSpec(field="q"),)))
    # each event is within range; their sum (2e300) is beyond what the detector is given
    assert (
        pipe.add(0, [_ev(10, "A", 1e300), _ev(20, "A", 1e300), _ev(30, "B", 1.0), _ev(2 * W, "A", 1.0)]) == []
    )
    closed = pipe.close()
    assert closed.non_finite == 1 and len(closed) == 3  # B in windows 0 and 1, A in window 1 (missing)


def test_end_of_input_closes_every_window() -> None:
    pipe = DetectorPipeline(_spec())
    pipe.add(0, [_ev(10, "A", 1.0)])
    assert pipe.step() is None
    pipe.drain(0)
    scored = pipe.step()
    assert scored is not None and len(scored.results) == 2


@pytest.mark.parametrize("now", [None, 10**13])
def test_rejects_come_back_by_position(now: int | None) -> None:
    pipe = DetectorPipeline(_spec())
    pipe.add(0, [_ev(5 * W, "A", 1.0)])
    pipe.step()
    assert pipe.add(0, [b"{", _ev(10, "A", 1.0), _ev(6 * W, "A", 1.0)], now) == [
        (0, "invalid_json"),
        (1, "late"),
    ]
