"""streams.timestamps: one vectorized parser for every timestamp a source can hand over."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.timestamps import MAX_TIMESTAMP_MS, _matrix, epoch_ms, iso_to_ms

T = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


@pytest.mark.parametrize(
    "texts",
    [
        ["2026-01-01T00:00:00Z", "2026-06-30T23:59:59Z", "2024-02-29T12:00:00Z"],
        ["2026-01-01T00:00:00.123+05:30", "1969-12-31T23:59:59.999-00:30", "0001-01-01T00:00:00.000+00:00"],
        ["2026-01-01 00:00:00.1", "2026-01-01 00:00:00.12", "2026-01-01T00:00:00.123456789"],
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01",
            "x",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00\x00Z",
            "2026-01-01T00:00:00.Z",
            "９９９９-01-01T00:00:00Z",
        ],
    ],
)
def test_text_agrees_with_fromisoformat(texts: list[str]) -> None:
    for column in (texts, pa.array(texts), pa.array(texts, pa.large_string())):
        ms, ok = epoch_ms(column)
        assert [m if good else None for m, good in zip(ms.tolist(), ok.tolist(), strict=True)] == [
            iso_to_ms(t) for t in texts
        ]


def test_one_layout_is_read_by_the_matrix_alone() -> None:
    texts = ["2026-01-01T00:00:00.123Z", "2024-02-29T23:59:59.999Z", "1969-12-31T23:59:59.000Z"]
    mat = np.frombuffer("".join(texts).encode(), np.uint8).reshape(3, -1)
    ms, ok = _matrix(mat)
    assert ok.all() and ms.tolist() == [iso_to_ms(t) for t in texts]


@given(st.lists(st.datetimes(timezones=st.none() | st.just(dt.UTC)), min_size=1, max_size=30), st.booleans())
@settings(max_examples=60, deadline=None)
def test_generated_datetimes_agree(values: list[dt.datetime], space: bool) -> None:
    texts = [v.isoformat(sep=" " if space else "T") for v in values]
    ms, ok = epoch_ms(texts)
    assert [m if good else None for m, good in zip(ms.tolist(), ok.tolist(), strict=True)] == [
        iso_to_ms(t) for t in texts
    ]


@pytest.mark.parametrize(
    "column",
    [
        pa.array([T], pa.timestamp("ms", tz="UTC")),
        pa.array([T * 1000 + 456], pa.timestamp("us")),
        pa.array([T * 1_000_000 + 456_789], pa.timestamp("ns", tz="Europe/Paris")),
        pa.array([T], pa.date64()),
        pa.array([T], pa.int64()),
        pa.array([T], pa.uint64()),
        pa.array([T + 0.9], pa.float64()),
        pa.array([Decimal(T)], pa.decimal128(16, 0)),
        pa.array(["2026-01-01T00:00:00.123Z"]),
        pa.array(["2026-01-01T01:00:00.123+01:00"], pa.large_string()),
        pa.array(["2026-01-01T00:00:00.123Z"]).dictionary_encode(),
        pa.chunked_array([pa.array([T], pa.int64())]),
    ],
    ids=lambda c: str(c.type),
)
def test_every_arrow_type(column: pa.Array) -> None:
    ms, ok = epoch_ms(column)
    assert ok.tolist() == [True] and ms.tolist() == [T]


def test_seconds_dates_nulls_and_out_of_range() -> None:
    assert epoch_ms(pa.array([T // 1000], pa.timestamp("s")))[0].tolist() == [T // 1000 * 1000]
    assert epoch_ms(pa.array([20454], pa.date32()))[0].tolist() == [20454 * 86_400_000]
    ms, ok = epoch_ms(pa.array([None, T, MAX_TIMESTAMP_MS, float("nan")], pa.float64()))
    assert ok.tolist() == [False, True, False, False] and ms.tolist() == [0, T, 0, 0]
    assert epoch_ms(pa.array([None, None]))[1].tolist() == [False, False]
    assert epoch_ms(pa.array([-1.5]))[0].tolist() == [-2]  # floored, like the JSON contract


def test_digit_text_is_epoch_ms_only_when_asked() -> None:
    texts = ["1767225600123", "-1000", " 1767225600123 ", "2026-01-01T00:00:00.123Z"]
    ms, ok = epoch_ms(pa.array(texts), text_epoch=True)
    assert ok.all() and ms.tolist() == [T, -1000, T, T]
    assert epoch_ms(texts)[1].tolist() == [False, False, False, True]
