"""streams.window: aggregation, lateness, missing windows, idle advance and checkpoints."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from sinks.record import timeseries_id
from streams.config import DetectorSpec, MeasureSpec
from streams.parse import EventParser
from streams.pipeline import averaged_events
from streams.window import ClosedWindows, WindowState, WindowStateError

W = 1000  # window_ms of the tests


def _spec(**kw: Any) -> DetectorSpec:
    base: dict[str, Any] = {
        "name": "shop",
        "topic": "orders",
        "dimensions": ("product",),
        "measures": (MeasureSpec(field="q"),),
        "window_ms": W,
    }
    base.update(kw)
    return DetectorSpec(**base)


def _ev(ts: int, product: str = "A", **measures: float) -> bytes:
    return json.dumps({"timestamp": ts, "product": product, **measures}).encode()


def _setup(spec: DetectorSpec) -> tuple[EventParser, WindowState]:
    parser = EventParser(spec)
    return parser, WindowState(spec, parser.registry)


def _rows(closed: ClosedWindows) -> list[tuple[str, str, int, float, bool]]:
    return [
        (dims[0][1] if dims else "", m, int(s), float(v), bool(miss))
        for dims, m, s, v, miss in zip(
            closed.dims, closed.measure, closed.window_start_ms, closed.value, closed.missing, strict=True
        )
    ]


def test_aggregations_per_window() -> None:
    spec = _spec(
        measures=(
            *(MeasureSpec(field=f, aggregation=f) for f in ("sum", "avg", "min", "max")),
            MeasureSpec(field="n", aggregation="count"),
        )
    )
    parser, ws = _setup(spec)
    vals = [3.0, -1.0, 10.0, 4.0]
    ws.add(parser.parse([_ev(100 + i, sum=v, avg=v, min=v, max=v) for i, v in enumerate(vals)]))
    ws.add(parser.parse([_ev(2500, sum=1, avg=1, min=1, max=1)]))
    closed = ws.advance()
    got = {m: v for _, m, s, v, miss in _rows(closed) if s == 0}
    assert got == {"sum": 16.0, "avg": 4.0, "min": -1.0, "max": 10.0, "n": 4.0}
    assert closed.window_end_ms.tolist() == [W] * 5 + [2 * W] * 5
    assert not closed.missing[:5].any()


def test_missing_window_policies() -> None:
    spec = _spec(
        measures=(
            MeasureSpec(field="z", aggregation="sum"),
            MeasureSpec(field="c", aggregation="avg"),
            MeasureSpec(field="s", aggregation="max", missing="skip"),
        )
    )
    parser, ws = _setup(spec)
    ws.add(parser.parse([_ev(10, z=5, c=7, s=1), _ev(3010, z=1, c=2, s=2), _ev(5000, z=0, c=0, s=0)]))
    rows = _rows(ws.advance())
    by = {(m, s): (v, miss) for _, m, s, v, miss in rows}
    assert by[("z", 1000)] == (0.0, True) and by[("z", 2000)] == (0.0, True)
    assert by[("c", 1000)] == (7.0, True) and by[("c", 2000)] == (7.0, True)  # carried
    assert ("s", 1000) not in by and ("s", 2000) not in by  # skipped
    assert by[("z", 3000)] == (1.0, False) and by[("c", 3000)] == (2.0, False)
    assert by[("c", 4000)] == (2.0, True)
    assert {s for _, m, s, _, _ in rows if m == "z"} == {0, 1000, 2000, 3000, 4000}


def test_each_closed_window_says_how_many_events_made_it_and_a_missing_one_none() -> None:
    spec = _spec(measures=(MeasureSpec(field="c", aggregation="avg"),))
    parser, ws = _setup(spec)
    ws.add(parser.parse([_ev(10, c=1), _ev(20, c=2), _ev(30, c=3), _ev(2010, c=5), _ev(3500, c=0)]))
    closed = ws.advance()
    got = dict(zip(closed.window_start_ms.tolist(), closed.events.tolist(), strict=True))
    assert got == {0: 3, 1000: 0, 2000: 1}
    assert closed.missing.tolist() == [False, True, False]
    again = ClosedWindows.concat([closed, closed])
    assert again.events.tolist() == [3, 0, 1, 3, 0, 1]


def test_only_an_average_hands_its_event_counts_to_the_detector() -> None:
    spec = _spec(
        measures=(MeasureSpec(field="n", aggregation="sum"), MeasureSpec(field="c", aggregation="avg"))
    )
    parser, ws = _setup(spec)
    ws.add(parser.parse([_ev(10, n=1, c=1), _ev(20, n=1, c=2), _ev(1500, n=1, c=0)]))
    closed = ws.advance()
    by = dict(zip(closed.measure, averaged_events(spec, closed).tolist(), strict=True))
    assert by == {"n": 0.0, "c": 2.0}


def test_window_closes_at_end_plus_lateness() -> None:
    parser, ws = _setup(_spec(allowed_lateness_ms=500))
    ws.add(parser.parse([_ev(100, q=1)]))
    ws.add(parser.parse([_ev(1499, q=1)]))
    assert len(ws.advance()) == 0  # watermark 1499 < 1000 + 500
    ws.add(parser.parse([_ev(1500, q=1)]))
    closed = ws.advance()
    assert closed.window_start_ms.tolist() == [0]
    assert closed.value.tolist() == [1.0]


def test_late_events_are_rejected_with_their_position_and_counted() -> None:
    parser, ws = _setup(_spec(allowed_lateness_ms=200))
    ws.add(parser.parse([_ev(100, q=1)]))
    # within one batch: 1300 moves the watermark, so 900 (window 0 closed at 1200) is late,
    # while 1100 (window 1) is on time
    rejects = ws.add(parser.parse([_ev(1300, q=1), _ev(900, q=5), _ev(1100, q=2), b"bad"]))
    assert rejects == [(1, "late")]
    assert ws.counters["late"] == 1
    closed = ws.advance()
    assert closed.value.tolist() == [1.0]
    ws.add(parser.parse([_ev(2300, q=1)]))
    assert ws.advance().value.tolist() == [3.0]
    # after a close, an event for the closed window is late even though it came in the same batch order
    assert ws.add(parser.parse([_ev(1999, q=1)])) == [(0, "late")]


def test_lateness_does_not_depend_on_batching() -> None:
    spec = _spec(allowed_lateness_ms=300, dimensions=("product",))
    rng = np.random.default_rng(5)
    ts = np.cumsum(rng.integers(0, 120, 400)) - rng.integers(0, 600, 400)
    raws = [_ev(int(t), f"p{i % 3}", q=float(i)) for i, t in enumerate(ts)]
    outputs = []
    for cuts in ([400], [1, 7, 50, 51, 300, 400], list(range(1, 401))):
        parser, ws = _setup(spec)
        late: list[int] = []
        start = 0
        parts: list[ClosedWindows] = []
        for end in cuts:
            late += [start + i for i, _ in ws.add(parser.parse(raws[start:end]))]
            parts.append(ws.advance())
            start = end
        rows = sorted(r for p in parts for r in _rows(p))
        outputs.append((late, rows))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][0]  # the data has late events


def test_output_is_sorted_by_window_end_then_series_and_names_series() -> None:
    parser, ws = _setup(_spec())
    ws.add(parser.parse([_ev(10, p, q=1) for p in "DCBA"] + [_ev(1010, "A", q=2), _ev(5000, "Z", q=1)]))
    closed = ws.advance()
    assert len(closed.groups()) == 5
    ends = closed.window_end_ms
    assert (np.diff(ends) >= 0).all()
    for g in closed.groups():
        keys = closed.registry.sort_keys(closed.series[g])
        assert (np.diff(keys) > 0).all()
    first = closed.groups()[0]
    assert len(closed.series[first]) == 4  # all series of window 0 in one group
    row = int(np.flatnonzero(closed.missing == 0)[0])
    product = closed.dims[row][0][1]
    assert closed.keys[row] == timeseries_id("shop", "q", {"product": product})
    assert closed.timeseries_id == closed.keys
    assert closed.dimension_lists[row] == [{"name": "product", "value": product}]
    assert closed.detector == "shop"


def test_a_window_is_emitted_once() -> None:
    parser, ws = _setup(_spec())
    ws.add(parser.parse([_ev(10, q=1), _ev(2500, q=1)]))
    first = ws.advance()
    assert first.window_start_ms.tolist() == [0, 1000]
    assert len(ws.advance()) == 0
    ws.add(parser.parse([_ev(2600, q=1)]))
    assert len(ws.advance()) == 0


def test_idle_advance_closes_windows_of_a_quiet_partition() -> None:
    parser, ws = _setup(_spec(idle_timeout_ms=5000))
    ws.add(parser.parse([_ev(100, q=4)]), now_ms=1_000_000)
    assert len(ws.idle_advance(1_004_999)) == 0  # not idle long enough
    closed = ws.idle_advance(1_005_000)  # watermark → 100 + 5000 closes [4000, 5000)
    assert closed.window_start_ms.tolist() == [0, 1000, 2000, 3000, 4000]
    assert closed.value.tolist() == [4.0, 0.0, 0.0, 0.0, 0.0]
    assert closed.missing.tolist() == [False, True, True, True, True]
    assert ws.add(parser.parse([_ev(3500, q=1)])) == [(0, "late")]


def test_idle_advance_without_wall_clock_in_add_and_disabled_at_zero() -> None:
    parser, ws = _setup(_spec(idle_timeout_ms=1000))
    ws.add(parser.parse([_ev(100, q=1)]))
    assert len(ws.advance(now_ms=50_000)) == 0  # stamps the activity
    assert len(ws.advance(now_ms=50_999)) == 0
    assert ws.advance(now_ms=51_000).window_start_ms.tolist() == [0]
    parser, off = _setup(_spec(idle_timeout_ms=0))
    off.add(parser.parse([_ev(100, q=1)]), now_ms=0)
    assert len(off.idle_advance(10**9)) == 0


def test_missing_run_is_capped() -> None:
    parser = EventParser(_spec())
    ws = WindowState(_spec(), parser.registry, max_missing_run=3)
    ws.add(parser.parse([_ev(10, q=1), _ev(100_000, q=1)]))
    closed = ws.advance()
    assert closed.window_start_ms.tolist() == [0, 1000, 2000, 3000]
    assert ws.counters["missing_skipped"] == 99 - 3


def test_state_round_trip_continues_like_an_uninterrupted_run() -> None:
    spec = _spec(
        dimensions=("product",),
        allowed_lateness_ms=700,
        measures=(
            MeasureSpec(field="q"),
            MeasureSpec(field="a", aggregation="avg"),
            MeasureSpec(field="m", aggregation="min"),
        ),
    )
    rng = np.random.default_rng(1)
    raws = [
        _ev(int(t), f"p{rng.integers(4)}", q=1.0, a=float(i % 7), m=float(i % 5))
        for i, t in enumerate(np.cumsum(rng.integers(0, 90, 600)) - rng.integers(0, 500, 600))
    ]

    def run(split: int | None) -> list[tuple[str, str, int, float, bool]]:
        parser, ws = _setup(spec)
        rows: list[tuple[str, str, int, float, bool]] = []
        for a in range(0, len(raws), 50):
            if split is not None and a == split:
                state = json.loads(json.dumps(ws.to_state()))  # JSON-compatible
                parser = EventParser(spec)  # a new process: new codes
                parser.parse([_ev(0, "unrelated", q=1)])
                ws = WindowState.from_state(spec, state, parser.registry)
            ws.add(parser.parse(raws[a : a + 50]))
            rows += _rows(ws.advance())
        return rows

    assert run(300) == run(None)
    assert run(50) == run(None)


def test_from_state_refuses_other_versions_and_detectors() -> None:
    parser, ws = _setup(_spec())
    ws.add(parser.parse([_ev(10, q=1)]))
    state = ws.to_state()
    assert WindowState.from_state(_spec(), state).watermark == 10
    with pytest.raises(WindowStateError, match="version"):
        WindowState.from_state(_spec(), {**state, "version": 99})
    with pytest.raises(WindowStateError, match="detector"):
        WindowState.from_state(_spec(name="other"), state)


def test_batches_of_another_registry_are_refused() -> None:
    spec = _spec()
    ws = WindowState(spec, EventParser(spec).registry)
    with pytest.raises(WindowStateError):
        ws.add(EventParser(spec).parse([_ev(1, q=1)]))


def test_concat_of_partitions() -> None:
    spec = _spec()
    parser = EventParser(spec)
    a, b = WindowState(spec, parser.registry), WindowState(spec, parser.registry)
    a.add(parser.parse([_ev(10, "A", q=1), _ev(1500, "A", q=1)]))
    b.add(parser.parse([_ev(20, "B", q=2), _ev(1600, "B", q=1)]))
    both = ClosedWindows.concat([a.advance(), b.advance()])
    assert [d[0][1] for d in both.dims] == ["A", "B"]
    assert both.value.tolist() == [1.0, 2.0]


def test_arrow_columns_of_closed_windows() -> None:
    import pyarrow as pa

    from sinks.record import RESULT_SCHEMA

    spec = _spec(measures=(MeasureSpec(field="q"), MeasureSpec(field="n", aggregation="count")))
    parser, ws = _setup(spec)
    ws.add(parser.parse([_ev(10, p, q=1) for p in "BAC"] + [_ev(1500, "D", q=1)]))
    first = ws.advance()
    ws.add(parser.parse([_ev(2500, p, q=1) for p in "EA"]))
    for closed in (first, ws.advance()):
        assert closed.timeseries_id_array().to_pylist() == closed.timeseries_id
        expected = pa.array(closed.dimension_lists, RESULT_SCHEMA.field("dimensionList").type)
        assert closed.dimension_list_array().equals(expected)


# -- event-time guards ----------------------------------------------------------------------------

DAY = 86_400_000
NOW = 1_704_067_200_000  # the wall clock of the guard tests


def test_an_event_far_ahead_of_the_wall_clock_is_refused_and_moves_nothing() -> None:
    parser, ws = _setup(_spec(max_future_ms=DAY))
    batch = [_ev(NOW - 5_000, q=1), _ev(NOW + 2 * DAY, q=9), _ev(NOW - 4_000, q=2), _ev(NOW - 2_500, q=3)]
    assert ws.add(parser.parse(batch), NOW) == [(1, "future_timestamp")]
    assert ws.watermark == NOW - 2_500
    assert ws.counters["future_timestamp"] == 1
    closed = ws.advance()
    assert closed.value.tolist() == [1.0, 2.0]  # windows -5 and -4; -3 is still open
    assert not closed.missing.any()


def test_an_event_far_ahead_of_the_watermark_is_refused_until_enough_events_agree() -> None:
    spec = _spec(max_future_ms=DAY, future_confirm_events=3)
    parser, ws = _setup(spec)
    old = NOW - 30 * DAY  # a replayed history: event time far behind the wall clock
    assert ws.add(parser.parse([_ev(old + i, q=1) for i in range(3)]), NOW) == []  # the watermark's support
    # one event of a later day, then the history goes on: it is refused, the rest is not late
    rejects = ws.add(parser.parse([_ev(old + 5 * DAY, q=1), _ev(old + 500, q=1), _ev(old + 1_500, q=1)]), NOW)
    assert rejects == [(0, "future_timestamp")]
    assert ws.watermark == old + 1_500
    # the history really jumps (a gap of days): three agreeing events are refused, the fourth is taken
    jump = [_ev(old + 5 * DAY + i, q=1) for i in range(5)]
    assert ws.add(parser.parse(jump[:2]), NOW) == [(0, "future_timestamp"), (1, "future_timestamp")]
    state = ws.to_state()  # the run of refused events survives a restart
    ws2 = WindowState.from_state(spec, state, parser.registry)
    assert ws2.add(parser.parse(jump[2:]), NOW) == [(0, "future_timestamp")]
    assert ws2.watermark == old + 5 * DAY + 4


def test_a_far_past_first_event_neither_pins_a_fresh_partition_nor_makes_missing_windows() -> None:
    spec = _spec(max_future_ms=DAY)  # future_confirm_events: 10
    parser, ws = _setup(spec)
    stray = _ev(NOW - 36 * 365 * DAY, q=7)  # a producer with a clock at zero-ish, first on the partition
    real = [_ev(NOW - 60_000 + 1_000 * i, q=1) for i in range(30)]
    assert ws.add(parser.parse([stray, *real[:10]]), NOW) == []  # every real event is taken
    assert ws.add(parser.parse(real[10:]), NOW) == []
    closed = ws.advance()
    assert not closed.missing.any()  # decades between the stray window and the real ones: not filled
    assert closed.value.tolist().count(7.0) == 1  # the stray event is processed: its own window
    assert ws.counters["missing_skipped"] > 0
    # and once the partition has support, a far-past event is simply late
    assert ws.add(parser.parse([_ev(NOW - 36 * 365 * DAY, q=7)]), NOW) == [(0, "late")]


def test_the_future_guard_does_not_depend_on_batching() -> None:
    spec = _spec(max_future_ms=DAY, future_confirm_events=2)
    ts = [NOW - 9_000, NOW + 5 * DAY, NOW - 8_000, NOW - 8 * DAY, NOW - 7_000, NOW + 2 * DAY, NOW - 6_000]
    ts += [NOW + 2 * DAY + i for i in range(4)] + [NOW - 5_000, NOW + 2 * DAY + 10]
    events = [_ev(t, q=1) for t in ts]
    results = []
    for cuts in ([], [1], [3, 8], list(range(1, len(events)))):
        parser, ws = _setup(spec)
        rejects: list[tuple[int, str]] = []
        bounds = [0, *cuts, len(events)]
        for a, b in itertools.pairwise(bounds):
            rejects += [(a + i, r) for i, r in ws.add(parser.parse(events[a:b]), NOW + 3 * DAY)]
        results.append((sorted(rejects), ws.watermark))
    assert all(r == results[0] for r in results)
    future, late = "future_timestamp", "late"
    # beyond the wall clock; late; alone ahead of the watermark; a run of two refused, the third taken
    assert results[0] == ([(1, future), (3, late), (5, future), (7, future), (8, future), (11, late)], ts[-1])


def test_without_a_wall_clock_or_with_the_guard_off_nothing_is_refused_as_future() -> None:
    for spec, now in ((_spec(max_future_ms=DAY), None), (_spec(max_future_ms=0), NOW)):
        parser, ws = _setup(spec)
        assert ws.add(parser.parse([_ev(NOW, q=1), _ev(NOW + 5 * DAY, q=1)]), now) == []
        assert ws.watermark == NOW + 5 * DAY


@pytest.mark.parametrize(
    ("window_ms", "ts", "ok"),
    [
        (1000, 253_402_300_799_999, False),  # 9999-12-31T23:59:59.999: its window ends in year 10000
        (1000, 253_402_300_798_999, True),
        (1000, -62_135_596_800_000, True),  # 0001-01-01: its window starts there
        (7 * DAY, -62_135_596_800_000, False),  # weekly windows from the epoch start before year 1
    ],
)
def test_events_whose_window_cannot_be_named_are_bad_timestamps(window_ms: int, ts: int, ok: bool) -> None:
    parser, ws = _setup(_spec(window_ms=window_ms))
    rejects = ws.add(parser.parse([_ev(ts, q=1)]))
    assert rejects == ([] if ok else [(0, "bad_timestamp")])
    if ok:
        from sinks.record import ResultBatch

        ws.watermark = ws.watermark + window_ms  # type: ignore[operator]
        closed = ws.advance()
        assert len(closed) == 1
        ResultBatch.build("shop", closed, _Scores(len(closed))).messages()  # the bounds format


class _Scores:
    """Enough of a ScoreBatch for the record's fields."""

    def __init__(self, n: int) -> None:
        z = np.zeros(n)
        self.inference = np.zeros(n, bool)
        self.anomaly_score = self.threshold = self.confidence = self.expected_value = self.raw_score = z
        self.decision = np.zeros(n, np.int8)
        self.processed_points = np.zeros(n, np.int64)
        self.warm_started = np.zeros(n, bool)
