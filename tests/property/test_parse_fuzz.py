"""Hypothesis fuzz of streams.parse: arbitrary bytes, wrong types, NaN/inf, huge numbers, unknown
fields, out-of-order and duplicate events. The parser never crashes, every message ends up either
as a row or as a reject with a known reason (and in the counters), and every row and reason agrees
with the per-event reference ``parse_event``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import DetectorSpec, MeasureSpec
from streams.parse import EventParser, ParsedEvent, parse_event

SPEC = DetectorSpec(
    name="fuzz",
    topic="t",
    dimensions=("product", "region"),
    measures=(
        MeasureSpec(field="q"),
        MeasureSpec(field="p", aggregation="max"),
        MeasureSpec(field="n", aggregation="count"),
    ),
)
SPEC_NO_COUNT = DetectorSpec(
    name="fuzz2",
    topic="t",
    dimensions=("product",),
    measures=(MeasureSpec(field="q", aggregation="avg"),),
)
FIXED = {
    "empty",
    "invalid_json",
    "not_an_object",
    "missing_timestamp",
    "bad_timestamp",
    "missing_dimension",
    "bad_dimension",
    "missing_measure",
    "dimension_too_long",
}


def _known(reason: str) -> bool:
    return reason in FIXED or reason.split(":", 1)[0] in {"bad_measure", "non_finite", "out_of_range"}


def _check(spec: DetectorSpec, raws: list[bytes | None]) -> None:
    parser = EventParser(spec)
    batch = parser.parse(raws)
    rows = batch.index.tolist()
    rejected = [i for i, _ in batch.rejects]
    assert sorted(rows + rejected) == list(range(len(raws)))  # each message exactly once
    assert rows == sorted(rows)
    assert all(_known(r) for _, r in batch.rejects)
    counted = sum(v for k, v in parser.counters.items() if _known(k))
    assert counted == len(batch.rejects)
    assert parser.counters["valid"] == len(rows)
    reasons = dict(batch.rejects)
    for i, raw in enumerate(raws):
        ref = parse_event(raw, spec)
        if isinstance(ref, str):
            assert reasons.get(i) == ref, (raw, ref, reasons.get(i))
            continue
        assert isinstance(ref, ParsedEvent)
        assert i not in reasons, (raw, reasons.get(i))
        row = rows.index(i)
        assert int(batch.timestamp_ms[row]) == ref.timestamp_ms
        assert parser.registry.dims(int(batch.combo[row])) == ref.dims
        assert tuple(batch.values[row].tolist()) == ref.values
        assert tuple(batch.present[row].tolist()) == ref.present


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([10**400, -(10**400), 1e308, 1e300, 1.0000001e300, 2**63, -(2**63) - 1]),
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6,
)


@st.composite
def timestamps(draw: st.DrawFn) -> object:
    when = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    kind = draw(st.sampled_from(["z", "naive", "offset", "space", "ms", "float", "date", "other"]))
    if kind == "z":
        return when.strftime("%Y-%m-%dT%H:%M:%S") + draw(st.sampled_from(["Z", ".5Z", ".123Z", ".123456Z"]))
    if kind == "naive":
        return when.isoformat()
    if kind == "offset":
        tz = timezone(timedelta(minutes=draw(st.integers(-23 * 60, 23 * 60))))
        return when.replace(tzinfo=tz).isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds"])))
    if kind == "space":
        return when.isoformat(sep=" ", timespec="milliseconds")
    if kind == "ms":
        return int(when.replace(tzinfo=UTC).timestamp() * 1000)
    if kind == "float":
        return when.replace(tzinfo=UTC).timestamp() * 1000 + 0.25
    if kind == "date":
        return when.date().isoformat()
    return draw(json_values)


@st.composite
def events(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.none() | st.binary(max_size=40))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    obj: dict[str, object] = {}
    for key, strategy in (
        ("timestamp", timestamps()),
        ("product", st.text(max_size=5) | json_values),
        ("region", st.sampled_from(["eu", "us", 7, True, 1.5]) | json_values),
        ("q", st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5) | json_values),
        ("p", st.integers(-(2**80), 2**80) | json_values),
        ("extra", json_values),
    ):
        if draw(st.integers(0, 9)) > 0:  # each field is sometimes absent
            obj[key] = draw(strategy)
    text = json.dumps(obj)  # NaN and Infinity become (invalid JSON) literals
    hostile = draw(st.integers(0, 11))
    if hostile == 0 and "product" in obj:  # a lone surrogate escape in a dimension (valid JSON syntax)
        text = text.replace('"product": ', '"product": "\\ud83d" , "_": ', 1)
    elif hostile == 1 and "product" in obj:  # a dimension value around the byte limit
        size = draw(st.sampled_from([1023, 1024, 1025, 4000]))
        text = text.replace(
            '"product": ', f'"product": "{draw(st.sampled_from(["x", "é"])) * size}", "_": ', 1
        )
    elif hostile == 2:  # nesting deeper than any decoder takes
        depth = draw(st.sampled_from([100, 2000, 100_000]))
        text = text.replace("{", '{"deep": ' + "[" * depth + "]" * depth + ", ", 1)
    if draw(st.integers(0, 15)) == 0:
        text = text.replace("{", '{ "q": 1, ', 1)  # a duplicate key
    return text.encode()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=80)), max_size=30))
def test_arbitrary_bytes_never_crash_and_are_all_accounted_for(raws: list[bytes | None]) -> None:
    _check(SPEC, raws)


@settings(max_examples=200, deadline=None)
@given(st.lists(events(), min_size=1, max_size=25), st.data())
def test_structured_fuzz_agrees_with_the_reference(raws: list[bytes | None], data: st.DataObject) -> None:
    # out of order and duplicated: shuffle and repeat some messages
    extra = data.draw(st.lists(st.sampled_from(raws), max_size=5))
    mixed = data.draw(st.permutations(raws + extra))
    _check(SPEC, mixed)
    _check(SPEC_NO_COUNT, mixed)


@settings(max_examples=50, deadline=None)
@given(st.lists(timestamps(), min_size=2, max_size=20))
def test_uniform_and_mixed_timestamp_batches(stamps: list[object]) -> None:
    raws: list[bytes | None] = [
        json.dumps({"timestamp": t, "product": "a", "region": "b", "q": 1}).encode() for t in stamps
    ]
    _check(SPEC, raws)
