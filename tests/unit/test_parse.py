"""streams.parse: the batch parser's columns, its reject reasons and its agreement with the reference."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from sinks.record import timeseries_id
from streams.config import DetectorSpec, MeasureSpec
from streams.parse import EventParser, ParsedEvent, parse_event


def _spec(**kw: object) -> DetectorSpec:
    base: dict[str, object] = {
        "name": "shop",
        "topic": "orders",
        "dimensions": ("product", "region"),
        "measures": (MeasureSpec(field="quantity"), MeasureSpec(field="price", aggregation="avg")),
    }
    base.update(kw)
    return DetectorSpec(**base)  # type: ignore[arg-type]


def _ms(d: datetime) -> int:
    return (d - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _ev(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_columns_of_valid_events() -> None:
    parser = EventParser(_spec())
    batch = parser.parse(
        [
            _ev(timestamp="2026-03-01T12:00:00.250Z", product="A", region="eu", quantity=3, price=1.5),
            _ev(timestamp=1_767_225_600_123, product="B", region="us", quantity=2.5, price=4),
            _ev(timestamp="2026-03-01T13:00:00+02:00", product="A", region="eu", quantity=1, price=2),
        ]
    )
    assert batch.size == 3
    assert batch.index.tolist() == [0, 1, 2]
    assert batch.rejects == []
    assert batch.timestamp_ms.tolist() == [
        _ms(datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
        1_767_225_600_123,
        _ms(datetime(2026, 3, 1, 11, 0, 0, tzinfo=UTC)),
    ]
    assert batch.values.tolist() == [[3.0, 1.5], [2.5, 4.0], [1.0, 2.0]]
    assert batch.present.all()
    # same dimensions → same combination code
    assert batch.combo[0] == batch.combo[2] != batch.combo[1]
    reg = parser.registry
    assert reg.dims(int(batch.combo[1])) == ("B", "us")
    series = reg.series_index(int(batch.combo[1]), 1)
    assert reg.timeseries_id(series) == timeseries_id("shop", "price", {"product": "B", "region": "us"})


def test_naive_iso_is_utc_and_sub_millisecond_digits_are_truncated() -> None:
    parser = EventParser(_spec(dimensions=()))
    batch = parser.parse(
        [
            _ev(timestamp="2026-03-01 12:00:00", quantity=1),
            _ev(timestamp="2026-03-01T12:00:00.123987654", quantity=1),
            _ev(timestamp=1_000.9, quantity=1),
        ]
    )
    base = _ms(datetime(2026, 3, 1, 12, tzinfo=UTC))
    assert batch.timestamp_ms.tolist() == [base, base + 123, 1000]


def test_dimension_values_are_stringified_and_share_a_series() -> None:
    parser = EventParser(_spec(dimensions=("store",), measures=(MeasureSpec(field="q"),)))
    batch = parser.parse(
        [
            _ev(timestamp=0, store=12, q=1),
            _ev(timestamp=0, store="12", q=1),
            _ev(timestamp=0, store=True, q=1),
            _ev(timestamp=0, store=1.5, q=1),
            _ev(timestamp=0, store=1, q=1),
        ]
    )
    dims = [parser.registry.dims(int(c)) for c in batch.combo]
    assert dims == [("12",), ("12",), ("true",), ("1.5",), ("1",)]
    assert batch.combo[0] == batch.combo[1]
    assert batch.combo[2] != batch.combo[4]  # True is not 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{", "invalid_json"),
        (b'{"timestamp": 1} trailing', "invalid_json"),
        (b'{"timestamp": NaN, "product": "A", "region": "r", "quantity": 1}', "invalid_json"),
        (b'{"timestamp": 1, "product": "\xff", "region": "r", "quantity": 1}', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b"42", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b'{"product": "A", "region": "r", "quantity": 1}', "missing_timestamp"),
        (b'{"timestamp": null, "product": "A", "region": "r", "quantity": 1}', "missing_timestamp"),
        (b'{"timestamp": "yesterday", "product": "A", "region": "r", "quantity": 1}', "bad_timestamp"),
        (
            b'{"timestamp": "2026-13-01T00:00:00Z", "product": "A", "region": "r", "quantity": 1}',
            "bad_timestamp",
        ),
        (
            b'{"timestamp": "2026-02-29T00:00:00Z", "product": "A", "region": "r", "quantity": 1}',
            "bad_timestamp",
        ),
        (b'{"timestamp": true, "product": "A", "region": "r", "quantity": 1}', "bad_timestamp"),
        (b'{"timestamp": 1e300, "product": "A", "region": "r", "quantity": 1}', "bad_timestamp"),
        (b'{"timestamp": [1], "product": "A", "region": "r", "quantity": 1}', "bad_timestamp"),
        (b'{"timestamp": 1, "region": "r", "quantity": 1}', "missing_dimension"),
        (b'{"timestamp": 1, "product": null, "region": "r", "quantity": 1}', "missing_dimension"),
        (b'{"timestamp": 1, "product": {"a": 1}, "region": "r", "quantity": 1}', "bad_dimension"),
        (b'{"timestamp": 1, "product": [1], "region": "r", "quantity": 1}', "bad_dimension"),
        (b'{"timestamp": 1, "product": "A", "region": "r", "quantity": "3"}', "bad_measure:quantity"),
        (b'{"timestamp": 1, "product": "A", "region": "r", "quantity": true}', "bad_measure:quantity"),
        (b'{"timestamp": 1, "product": "A", "region": "r", "quantity": 1, "price": {}}', "bad_measure:price"),
        (b'{"timestamp": 1, "product": "A", "region": "r", "quantity": 1e400}', "non_finite:quantity"),
        (b'{"timestamp": 1, "product": "A", "region": "r", "quantity": -1e301}', "out_of_range:quantity"),
        (
            b'{"timestamp": 1, "product": "A", "region": "r", "quantity": 1, "price": 1e308}',
            "out_of_range:price",
        ),
        (b'{"timestamp": 1, "product": "A", "region": "r"}', "missing_measure"),
        # hostile input: each one used to raise outside the dead-letter path
        (b'{"timestamp": 1, "product": "\\ud800", "region": "r", "quantity": 1}', "bad_dimension"),
        (b'{"timestamp": 1, "product": "a\\udc00b", "region": "r", "quantity": 1}', "bad_dimension"),
        (_ev(timestamp=1, product="x" * 1025, region="r", quantity=1), "dimension_too_long"),
        (_ev(timestamp=1, product="é" * 513, region="r", quantity=1), "dimension_too_long"),
        (
            b'{"timestamp": 1, "product": "A", "region": "r", "quantity": 1, "x": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}",
            "invalid_json",
        ),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "invalid_json"),
        (b'{"timestamp": 1, "product": ' + b"9" * 5000 + b', "region": "r", "quantity": 1}', "invalid_json"),
        (bytes(range(256)), "invalid_json"),
        (
            b'{"timestamp": ' + b"9" * 400 + b', "product": "A", "region": "r", "quantity": 1}',
            "bad_timestamp",
        ),
    ],
)
def test_reject_reasons(raw: bytes | None, reason: str) -> None:
    spec = _spec()
    good = _ev(timestamp=5, product="A", region="r", quantity=1)
    parser = EventParser(spec)
    batch = parser.parse([good, raw, good])
    assert batch.rejects == [(1, reason)]
    assert batch.index.tolist() == [0, 2]
    assert parser.counters[reason] == 1
    assert parser.counters["valid"] == 2
    assert parse_event(raw, spec) == reason


def test_absent_measure_is_not_a_reject_and_is_counted() -> None:
    parser = EventParser(_spec())
    batch = parser.parse(
        [
            _ev(timestamp=1, product="A", region="r", quantity=2),
            _ev(timestamp=1, product="A", region="r", price=3.0, quantity=None),
        ]
    )
    assert batch.rejects == []
    assert batch.present.tolist() == [[True, False], [False, True]]
    assert batch.values.tolist() == [[2.0, 0.0], [0.0, 3.0]]
    assert parser.counters["absent:price"] == 1
    assert parser.counters["absent:quantity"] == 1


def test_count_measure_needs_no_field() -> None:
    spec = _spec(measures=(MeasureSpec(field="events", aggregation="count"),))
    batch = EventParser(spec).parse(
        [
            _ev(timestamp=1, product="A", region="r"),
            _ev(timestamp=2, product="A", region="r", events="ignored"),
        ]
    )
    assert batch.rejects == []
    assert batch.values.tolist() == [[1.0], [1.0]]


def test_unknown_and_nested_fields_are_ignored_and_odd_field_names_work() -> None:
    spec = DetectorSpec(
        name="d",
        topic="t",
        timestamp_field="event time",
        dimensions=("class",),
        measures=(MeasureSpec(field="x-y", aggregation="max"),),
    )
    raw = b'{"event time": 10, "class": "c", "x-y": 4, "extra": {"deep": [1, {"a": null}]}, "n": "s"}'
    batch = EventParser(spec).parse([raw])
    assert batch.rejects == []
    assert batch.timestamp_ms.tolist() == [10]
    assert batch.values.tolist() == [[4.0]]


def test_every_position_is_either_a_row_or_a_reject() -> None:
    parser = EventParser(_spec())
    raws: list[bytes | None] = []
    for i in range(300):
        kind = i % 5
        if kind == 0:
            raws.append(b"junk")
        elif kind == 1:
            raws.append(None)
        else:
            raws.append(_ev(timestamp=i, product=f"p{i % 7}", region="r", quantity=i))
    batch = parser.parse(raws)
    positions = sorted([*batch.index.tolist(), *(i for i, _ in batch.rejects)])
    assert positions == list(range(300))
    assert parser.counters["invalid_json"] == 60
    assert parser.counters["empty"] == 60
    assert parser.counters["valid"] == 180


def test_batch_rows_equal_the_reference_parser() -> None:
    spec = _spec()
    raws = [
        _ev(timestamp="2026-01-01T00:00:00Z", product="A", region="r", quantity=1),
        _ev(timestamp="2026-01-01T00:00:00.5-03:30", product=5, region="r", quantity=2, price=None),
        _ev(timestamp="20260101T000000", product="A", region="r", price=7),
        _ev(timestamp=-5, product="A", region=2.5, quantity=1),
        b'{"timestamp": 3, "product": "A", "product": "B", "region": "r", "quantity": 1}',
    ]
    parser = EventParser(spec)
    batch = parser.parse(raws)
    assert batch.rejects == []
    for row, raw in enumerate(raws):
        ref = parse_event(raw, spec)
        assert isinstance(ref, ParsedEvent)
        assert batch.timestamp_ms[row] == ref.timestamp_ms
        assert parser.registry.dims(int(batch.combo[row])) == ref.dims
        assert tuple(batch.values[row]) == ref.values
        assert tuple(batch.present[row]) == ref.present
    assert parser.registry.dims(int(batch.combo[4])) == ("B", "r")  # the last duplicate key wins


def test_parsed_columns_have_the_documented_dtypes() -> None:
    batch = EventParser(_spec()).parse([_ev(timestamp=1, product="A", region="r", quantity=1)])
    assert batch.timestamp_ms.dtype == np.int64
    assert batch.combo.dtype == np.int64
    assert batch.index.dtype == np.int64
    assert batch.values.dtype == np.float64 and batch.values.shape == (1, 2)
    assert batch.present.dtype == np.bool_


@pytest.mark.parametrize("dense_limit", [1 << 22, 64])
def test_many_dimension_values_across_batches(monkeypatch: pytest.MonkeyPatch, dense_limit: int) -> None:
    import streams.parse as parse_module

    monkeypatch.setattr(parse_module, "_DENSE_COMBOS", dense_limit)  # 64: the dict of code tuples
    spec = _spec(dimensions=("a", "b", "c"), measures=(MeasureSpec(field="q"),))
    parser = EventParser(spec)
    rng = np.random.default_rng(3)
    for size in (5, 50, 400):
        raws = [
            _ev(
                timestamp=1,
                a=f"a{rng.integers(size)}",
                b=int(rng.integers(size)),
                c=str(rng.integers(3)),
                q=1,
            )
            for _ in range(300)
        ]
        batch = parser.parse(raws)
        assert batch.rejects == []
        for row, raw in enumerate(raws):
            ref = parse_event(raw, spec)
            assert isinstance(ref, ParsedEvent)
            assert parser.registry.dims(int(batch.combo[row])) == ref.dims
    assert len(parser.registry) == len({parser.registry.dims(i) for i in range(len(parser.registry))})


def test_dimension_values_up_to_the_byte_limit_are_taken() -> None:
    from streams.parse import MAX_DIMENSION_BYTES

    parser = EventParser(_spec())
    ascii_max = "x" * MAX_DIMENSION_BYTES
    multi_max = "é" * (MAX_DIMENSION_BYTES // 2)  # 2 bytes each
    batch = parser.parse(
        [
            _ev(timestamp=1, product=ascii_max, region="r", quantity=1),
            _ev(timestamp=1, product=multi_max, region="\u0000\u001f", quantity=1),
            _ev(timestamp=1, product=ascii_max + "y", region="r", quantity=1),
        ]
    )
    assert batch.rejects == [(2, "dimension_too_long")]
    assert [parser.registry.dims(int(c)) for c in batch.combo] == [(ascii_max, "r"), (multi_max, "\x00\x1f")]


def test_new_series_beyond_max_series_are_refused_and_nothing_of_them_is_kept() -> None:
    parser = EventParser(_spec(max_series=4))  # two measures: two dimension combinations
    batch = parser.parse(
        [
            _ev(timestamp=1, product="A", region="r", quantity=1),
            _ev(timestamp=1, product="B", region="r", quantity=1),
            _ev(timestamp=1, product="C", region="r", quantity=1),  # a third combination
            _ev(timestamp=2, product="A", region="r", quantity=1),  # known: taken
            _ev(timestamp=2, product=1.5, region="r", quantity=1),  # new, through the reference
            _ev(timestamp=2, product="D", region="r", quantity="x"),  # invalid first
            _ev(timestamp=2, product="B", region="s", quantity=1),  # known values, new combination
        ]
    )
    assert sorted(batch.rejects) == [
        (2, "cardinality_limit"),
        (4, "cardinality_limit"),
        (5, "bad_measure:quantity"),
        (6, "cardinality_limit"),
    ]
    assert batch.index.tolist() == [0, 1, 3]
    assert [parser.registry.dims(int(c)) for c in batch.combo] == [("A", "r"), ("B", "r"), ("A", "r")]
    assert len(parser.registry) == 2 and parser.counters["cardinality_limit"] == 3
    # once the cap is reached, a new value is not even given a code
    again = parser.parse([_ev(timestamp=3, product=f"id-{i}", region="r", quantity=1) for i in range(100)])
    assert again.rejects == [(i, "cardinality_limit") for i in range(100)]
    assert not any(t.startswith("id-") for t in parser._dim_text_codes[0])


def test_a_huge_integer_timestamp_among_float_ones_is_a_bad_timestamp() -> None:
    # found by the worker soak: the column of floats and one integer beyond any float raised
    huge = b'{"timestamp": ' + b"9" * 400 + b', "product": "A", "region": "r", "quantity": 1}'
    batch = EventParser(_spec()).parse([_ev(timestamp=1.5, product="A", region="r", quantity=1), huge])
    assert batch.rejects == [(1, "bad_timestamp")] and batch.timestamp_ms.tolist() == [1]
