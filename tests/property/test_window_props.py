"""Property tests of streams.window against a naive per-event reference.

- the aggregates (sum, avg, count, min, max) of every closed window equal the reference's, for
  any arrival order, any lateness and any batching;
- a (series, window) is emitted at most once;
- every event is either aggregated or rejected as late, nothing is lost;
- every known series gets one row per window from its first window to the close frontier.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import DetectorSpec, MeasureSpec
from streams.parse import EventParser
from streams.window import WindowState

AGGS = ("sum", "avg", "count", "min", "max")
FIELDS = {"sum": "s", "avg": "a", "count": "c", "min": "lo", "max": "hi"}


def _spec(window_ms: int, lateness_ms: int) -> DetectorSpec:
    return DetectorSpec(
        name="prop",
        topic="t",
        dimensions=("k",),
        window_ms=window_ms,
        allowed_lateness_ms=lateness_ms,
        measures=tuple(MeasureSpec(field=FIELDS[a], aggregation=a, missing="zero") for a in AGGS),
    )


@st.composite
def events_strategy(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """(series, timestamp, value): time mostly moves forward, with disorder up to ``jitter``.

    Timestamps sit on a 10 ms grid so that "exactly at end + lateness" happens often.
    """
    n = draw(st.integers(1, 150))
    jitter = draw(st.sampled_from([0, 50, 300, 2_000]))
    steps = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    back = draw(st.lists(st.integers(0, jitter // 10), min_size=n, max_size=n))
    series = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    values = draw(st.lists(st.integers(-50, 50), min_size=n, max_size=n))
    out, t = [], 0
    for i in range(n):
        t += steps[i] * 10
        out.append((series[i], max(0, t - back[i] * 10), values[i]))
    return out


@settings(max_examples=60, deadline=None)
@given(
    events=events_strategy(),
    window_ms=st.sampled_from([50, 100, 250]),
    lateness_ms=st.integers(0, 60).map(lambda x: x * 10),
    cuts=st.lists(st.integers(1, 149), max_size=6),
)
def test_windows_match_the_per_event_reference(
    events: list[tuple[int, int, int]], window_ms: int, lateness_ms: int, cuts: list[int]
) -> None:
    spec = _spec(window_ms, lateness_ms)
    raws = [
        json.dumps({"timestamp": t, "k": f"k{s}", **{f: v for f in FIELDS.values()}}).encode()
        for s, t, v in events
    ]
    # the reference: one event at a time
    watermark = None
    acc: dict[tuple[str, int], list[int]] = defaultdict(list)
    late_ref: list[int] = []
    for i, (s, t, v) in enumerate(events):
        w = t // window_ms
        if watermark is not None and (w + 1) * window_ms + lateness_ms <= watermark:
            late_ref.append(i)
            continue
        acc[(f"k{s}", w)].append(v)
        watermark = t if watermark is None else max(watermark, t)
    assert watermark is not None
    frontier = (watermark - lateness_ms) // window_ms - 1

    parser = EventParser(spec)
    ws = WindowState(spec, parser.registry)
    bounds = sorted({c for c in cuts if c < len(raws)} | {len(raws)})
    start = 0
    late: list[int] = []
    emitted: dict[tuple[str, str, int], tuple[float, bool]] = {}
    accepted = 0
    for end in bounds:
        batch = parser.parse(raws[start:end])
        assert batch.rejects == []
        rejects = ws.add(batch)
        late += [start + i for i, reason in rejects if reason == "late"]
        accepted += len(batch) - len(rejects)
        closed = ws.advance()
        for dims, measure, w0, value, missing in zip(
            closed.dims,
            closed.measure,
            closed.window_start_ms.tolist(),
            closed.value.tolist(),
            closed.missing.tolist(),
            strict=True,
        ):
            key = (dims[0][1], measure, w0 // window_ms)
            assert key not in emitted, f"window emitted twice: {key}"
            emitted[key] = (value, missing)
        start = end

    # nothing lost: accepted + late = all events, and the late ones are the reference's
    assert late == late_ref
    assert accepted + len(late) == len(events)
    # every closed window with data carries the reference's aggregate
    data = {k: v for k, v in emitted.items() if not v[1]}
    expected = {}
    for (series, w), vals in acc.items():
        if w > frontier:
            continue
        aggs = {"s": sum(vals), "a": sum(vals) / len(vals), "c": len(vals), "lo": min(vals), "hi": max(vals)}
        for field, value in aggs.items():
            expected[(series, field, w)] = value
    assert set(data) == set(expected)
    for key, value in expected.items():
        assert data[key][0] == pytest.approx(value, rel=1e-12, abs=1e-9), key
    # one row per window from the series' first window to the frontier
    for series in {s for s, _ in acc}:
        first = min(w for (s, w) in acc if s == series)
        if first > frontier:
            continue
        for field in FIELDS.values():
            windows = sorted(w for (s, f, w) in emitted if s == series and f == field)
            assert windows == list(range(first, frontier + 1))
    assert all(v == (0.0, True) for v in emitted.values() if v[1])  # zero policy


@settings(max_examples=25, deadline=None)
@given(events=events_strategy(), lateness_ms=st.integers(0, 400), split=st.integers(1, 149))
def test_a_checkpoint_changes_nothing(
    events: list[tuple[int, int, int]], lateness_ms: int, split: int
) -> None:
    spec = _spec(100, lateness_ms)
    raws = [
        json.dumps({"timestamp": t, "k": f"k{s}", "s": v, "a": v, "lo": v, "hi": v}).encode()
        for s, t, v in events
    ]
    split = min(split, len(raws))

    def rows(restore: bool) -> list[tuple[object, ...]]:
        parser = EventParser(spec)
        ws = WindowState(spec, parser.registry)
        out: list[tuple[object, ...]] = []
        for part in (raws[:split], raws[split:]):
            ws.add(parser.parse(part))
            closed = ws.advance()
            out += list(
                zip(
                    closed.keys,
                    closed.window_start_ms.tolist(),
                    closed.value.tolist(),
                    closed.missing.tolist(),
                    strict=True,
                )
            )
            if restore:
                parser = EventParser(spec)
                ws = WindowState.from_state(spec, json.loads(json.dumps(ws.to_state())), parser.registry)
        return out

    assert rows(True) == rows(False)
