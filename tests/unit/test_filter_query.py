"""The anomaly table's filter parser: what it reads, its messages, its length cap, and that its work
is linear in the input (counted by the scanner, never timed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard import views
from dashboard.filter_query import MAX_FILTER_CHARS, ScanStats, parse_filter_query
from dashboard.testing import hostile_filters
from sinks.query import Filter, QueryInputError

#: The hostile families, by name (each built at several sizes below).
FAMILIES = sorted(hostile_filters(10))


def _work(text: str) -> ScanStats:
    stats = ScanStats()
    try:
        parse_filter_query(text, max_chars=len(text) + 1, stats=stats)
    except QueryInputError:
        pass
    return stats


def test_reads_what_the_data_table_writes() -> None:
    got = parse_filter_query(
        '{anomalyScore} s> 80 && {dimensions} icontains "host-1" && {measure} = cpu'
        " && {expectedValue} le 3.5 && {detectorName} ne `a b`"
    )
    assert got == [
        Filter("anomalyScore", ">", "80"),
        Filter("dimensions", "contains", "host-1"),
        Filter("measure", "=", "cpu"),
        Filter("expectedValue", "<=", "3.5"),
        Filter("detectorName", "!=", "a b"),
    ]
    # a quoted value may hold the separator and escaped quotes; a bare one runs to the next ' && '
    assert parse_filter_query(r"{dimensions} contains 'a && \'b\'' && {measure} = x y  ") == [
        Filter("dimensions", "contains", "a && 'b'"),
        Filter("measure", "=", "x y"),
    ]
    assert parse_filter_query("{windowStart} datestartswith 2026-02") == [
        Filter("windowStart", ">=", dt.datetime(2026, 2, 1, tzinfo=dt.UTC)),
        Filter("windowStart", "<", dt.datetime(2026, 3, 1, tzinfo=dt.UTC)),
    ]
    assert parse_filter_query(None) == [] and parse_filter_query("   ") == []


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("anomalyScore > 80", 1, "'{column}'"),
        ("{} > 80", 2, "a column name"),
        ("{a > 80", 8, "'}' after the column name"),
        ("{a}> 80", 4, "a space after the column"),
        ("{a} is blank", 5, "an operator"),
        ("{a} ~ 3", 5, "an operator"),
        ("{a} >3", 6, "a space after the operator"),
        ("{a} > ", 7, "a value after '>'"),
        ('{a} = "x', 9, 'the closing "'),
        ('{a} = "x" y', 11, "' && ' or the end"),
        ("{a} = 1 && ", 12, "'{column}'"),
    ],
)
def test_a_malformed_filter_says_where_and_what_was_expected(text: str, where: int, expected: str) -> None:
    with pytest.raises(QueryInputError) as info:
        parse_filter_query(text)
    assert f"at character {where}: expected {expected}" in str(info.value)


def test_messages_stay_one_short_line_whatever_the_input() -> None:
    with pytest.raises(QueryInputError) as info:
        parse_filter_query("{a} ~ " + "x\n" * 1000)
    message = str(info.value)
    assert "\n" not in message and len(message) < 200


def test_the_length_cap_refuses_before_scanning() -> None:
    text = "{measure} = " + "x" * (100 * 1024)
    stats = ScanStats()
    with pytest.raises(QueryInputError, match=r"the filter is 102,412 characters long; .* at most 4,096"):
        parse_filter_query(text, stats=stats)
    assert stats.steps == 0 and stats.chars == 0
    at_cap = "{measure} = " + "x" * (MAX_FILTER_CHARS - 12)
    assert parse_filter_query(at_cap) == [Filter("measure", "=", "x" * (MAX_FILTER_CHARS - 12))]


def test_a_100kb_filter_in_the_table_gets_a_message(tmp_path: Path) -> None:
    rows, message = views.anomaly_rows(tmp_path, "24h", "{dimensions} contains a" + " " * 100_000 + "b", None)
    assert rows == []
    assert message.startswith("Filter not applied: the filter is 100,024 characters long")


@pytest.mark.parametrize("family", FAMILIES)
def test_work_is_linear_in_the_input(family: str) -> None:
    """Characters examined stay within 2 x the input (+ a constant) at every size, and the work per
    input character does not grow with the input: no step rescans what an earlier step read."""
    per_char = []
    for n in (1_000, 4_000, 16_000):
        text = hostile_filters(n)[family]
        stats = _work(text)
        assert stats.chars <= 2 * len(text) + 64, (family, len(text), stats)
        assert stats.steps <= len(text) + 8, (family, len(text), stats)
        per_char.append((stats.chars + 1) / len(text))
    # quadratic work would grow 16x per character from the first size to the last
    assert per_char[-1] <= per_char[0] * 1.1 + 0.01, (family, per_char)


def test_the_count_covers_the_input() -> None:
    """For an accepted filter every character is examined at least once (the count is not blind)."""
    for family in ("many terms", "many quoted terms holding &&", "run of spaces inside a bare value"):
        text = hostile_filters(20_000)[family]
        stats = ScanStats()
        parse_filter_query(text, max_chars=len(text), stats=stats)
        assert len(text) <= stats.chars <= 2 * len(text) + 64


_columns = st.sampled_from(["anomalyScore", "dimensions", "measure", "windowStart"])
_ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "contains", "eq", "scontains", "ine"])
_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_columns, _ops, _values), min_size=1, max_size=5))
def test_quoted_values_round_trip(terms: list[tuple[str, str, str]]) -> None:
    text = " && ".join(
        f'{{{c}}} {op} "{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for c, op, v in terms
    )
    got = parse_filter_query(text, max_chars=len(text))
    plain = {"eq": "=", "scontains": "contains", "ine": "!="}
    assert got == [Filter(c, plain.get(op, op), v) for c, op, v in terms]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}\"'`\\&= <>!containsiq-x1 \n\t", max_size=300))
def test_any_text_gives_filters_or_a_message_within_the_bound(text: str) -> None:
    stats = ScanStats()
    try:
        got = parse_filter_query(text, max_chars=len(text) + 1, stats=stats)
    except QueryInputError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(f, Filter) for f in got)
    assert stats.chars <= 2 * len(text) + 64
