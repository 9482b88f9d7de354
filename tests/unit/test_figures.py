"""dashboard.figures (pure: frame → Figure) and the page's pure helpers in dashboard.views."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from dashboard import figures, views
from sinks.query import Filter, QueryInputError

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEP = dt.timedelta(minutes=10)


def _points(n: int = 60, flagged: tuple[int, ...] = (40, 55), threshold: float = 70.0) -> pa.Table:
    rng = np.random.default_rng(3)
    expected = 100 + 10 * np.sin(np.arange(n) / 6)
    value = expected + rng.normal(0, 1, n)
    score = rng.uniform(0, 30, n)
    decision = np.zeros(n, np.int8)
    for i in flagged:
        value[i] += 80
        score[i] = 95
        decision[i] = 1
    expected[:5] = np.nan  # learning: no expected value yet
    return pa.table(
        {
            "windowStart": pa.array([T0 + i * STEP for i in range(n)], pa.timestamp("us", tz="UTC")),
            "aggregatedMeasureValue": value,
            "expectedValue": expected,
            "anomalyScore": score,
            "anomalyDecisionThreshold": np.full(n, threshold),
            "anomalyDecision": decision,
        }
    )


def _trace(fig: object, name: str) -> object:
    matches = [t for t in fig.data if t.name == name]  # type: ignore[attr-defined]
    assert len(matches) == 1, f"expected one trace named {name!r}"
    return matches[0]


def test_series_figure_has_every_trace_on_the_right_axis() -> None:
    points = _points()
    fig = figures.series_figure(points, title="t", revision="abc")
    value = _trace(fig, figures.VALUE)
    expected = _trace(fig, figures.EXPECTED)
    score = _trace(fig, figures.SCORE)
    threshold = _trace(fig, figures.THRESHOLD)
    anomaly = _trace(fig, figures.ANOMALY)
    band = _trace(fig, figures.BAND_HIGH)
    for t in (value, expected, band, anomaly):
        assert t.yaxis in (None, "y")
    assert score.yaxis == "y2" and threshold.yaxis == "y2"
    assert fig.layout.yaxis2.side == "right" and fig.layout.yaxis2.overlaying == "y"
    assert list(threshold.y) == [70.0] * points.num_rows
    assert list(value.y) == points.column("aggregatedMeasureValue").to_pylist()
    assert band.fill == "tonexty"
    assert fig.layout.uirevision == "abc"


def test_anomaly_markers_sit_at_the_flagged_windows() -> None:
    fig = figures.series_figure(_points(flagged=(12, 40, 55)))
    anomaly = _trace(fig, figures.ANOMALY)
    assert list(anomaly.x) == [(T0 + i * STEP).strftime("%Y-%m-%d %H:%M:%S") for i in (12, 40, 55)]
    values = _points(flagged=(12, 40, 55)).column("aggregatedMeasureValue").to_pylist()
    assert list(anomaly.y) == [values[i] for i in (12, 40, 55)]
    assert anomaly.mode == "markers"


def test_no_anomaly_no_marker() -> None:
    assert len(_trace(figures.series_figure(_points(flagged=())), figures.ANOMALY).x) == 0


def test_band_is_causal_ignores_anomalies_and_is_absent_while_learning() -> None:
    p = _points(flagged=(40,))
    value = p.column("aggregatedMeasureValue").to_numpy()
    expected = p.column("expectedValue").to_numpy(zero_copy_only=False)
    flagged = p.column("anomalyDecision").to_numpy() == 1
    low, high = figures.expected_band(value, expected, windows=10, exclude=flagged)
    assert np.isnan(high[:8]).all()  # learning windows have no expected value, then < 3 residuals
    resid = value - expected
    i = 30
    assert high[i] == pytest.approx(expected[i] + figures.BAND_SIGMAS * np.std(resid[20:30]))
    assert low[i] == pytest.approx(expected[i] - figures.BAND_SIGMAS * np.std(resid[20:30]))
    # the anomaly at 40 widens neither its own band nor the next one
    after = [j for j in range(41, 51) if j != 40]
    want = np.std(np.delete(resid[41 - 10 : 41], 40 - 31))
    assert high[41] - expected[41] == pytest.approx(figures.BAND_SIGMAS * want)
    assert (high[after] - expected[after] < 20).all()


def test_focus_sets_the_x_range_and_empty_frames_say_so() -> None:
    focus = (T0 + 10 * STEP, T0 + 20 * STEP)
    fig = figures.series_figure(_points(), focus=focus)
    assert list(fig.layout.xaxis.range) == ["2026-01-01 01:40:00", "2026-01-01 03:20:00"]
    empty = figures.series_figure(_points().slice(0, 0))
    assert len(empty.data) == 0 and "No results" in empty.layout.annotations[0].text


def test_window_width_is_the_common_gap() -> None:
    assert figures.window_width(_points()) == STEP
    assert figures.window_width(_points().slice(0, 1)) is None


def test_filter_query_parsing() -> None:
    got = views.parse_filter_query(
        '{anomalyScore} > 80 && {dimensions} icontains "host-1" && {measure} = cpu'
    )
    assert got == [
        Filter("anomalyScore", ">", "80"),
        Filter("dimensions", "contains", "host-1"),
        Filter("measure", "=", "cpu"),
    ]
    day = views.parse_filter_query("{windowStart} datestartswith 2026-01-05")
    assert day == [
        Filter("windowStart", ">=", dt.datetime(2026, 1, 5, tzinfo=dt.UTC)),
        Filter("windowStart", "<", dt.datetime(2026, 1, 6, tzinfo=dt.UTC)),
    ]
    assert views.parse_filter_query("") == []
    quoted = views.parse_filter_query(r'{dimensions} contains "a \"b\" ; DROP"')
    assert quoted == [Filter("dimensions", "contains", 'a "b" ; DROP')]
    for bad in ("anomalyScore > 80", "{anomalyScore} ~ 3", "{windowStart} datestartswith 2026-13-45"):
        with pytest.raises(QueryInputError):
            views.parse_filter_query(bad)


def test_row_ids_and_alert_links_round_trip() -> None:
    sid = "ab" * 32
    assert views.focus_from_row(views.row_id(sid, "2026-01-01 10:00:00")) == {
        "series": sid,
        "time": "2026-01-01 10:00:00",
    }
    assert views.focus_from_row("garbage") is None
    link = f"?detector=shop&series={sid}&from=2026-01-01+07%3A00%3A00&to=2026-01-01+12%3A00%3A00"
    assert views.focus_from_url(link) == {
        "series": sid,
        "start": "2026-01-01 07:00:00",
        "end": "2026-01-01 12:00:00",
    }
    assert views.focus_from_url("?series=not-hex';--") is None
    assert views.focus_from_incident(f"{sid}@2026-01-01 08:00:00@2026-01-01 09:00:00") == {
        "series": sid,
        "start": "2026-01-01 08:00:00",
        "end": "2026-01-01 09:00:00",
    }


def test_the_value_hover_gives_expected_value_band_score_confidence_and_stage() -> None:
    points = _points(n=30, flagged=(20,))
    n = points.num_rows
    points = points.append_column("anomalyConfidenceScore", pa.array(np.full(n, 80.0)))
    points = points.append_column("modelStage", pa.array(["LEARNING"] * 10 + ["INFERENCE"] * (n - 10)))
    value = _trace(figures.series_figure(points), figures.VALUE)
    band = _trace(figures.series_figure(points), figures.BAND_HIGH)
    for name in ("expected", "band", "score", "confidence"):
        assert name in value.hovertemplate
    facts = value.customdata[20]
    assert facts[0] == pytest.approx(points.column("expectedValue")[20].as_py())
    assert facts[2] == pytest.approx(band.y[20])
    assert facts[3] == 95 and facts[4] == 80.0 and facts[5] == "INFERENCE"
    assert value.customdata[0][0] is None and value.customdata[0][5] == "LEARNING"  # no expected value yet
    assert facts[6] == "not recorded"  # no anomalyReason column: results from before the record had it


def _explained(points: pa.Table, held: tuple[int, ...] = ()) -> pa.Table:
    """Add the detector's explanation: the value channel carries the score (the forest at 25), the
    ``held`` points' scores are capped at 0.7 x threshold under channels at 100 (after an alert)."""
    n = points.num_rows
    score = points.column("anomalyScore").to_pylist()
    value_score: list[float] = list(score)
    forest_score: list[float | None] = [0.0] * n
    reason = ["value" if s > 0 else "" for s in score]
    value_score[25], forest_score[25], reason[25] = min(10.0, score[25]), score[25], "forest"
    forest_score[3] = None
    for i in held:
        score[i], value_score[i] = 49.0, 100.0
    points = points.set_column(points.schema.get_field_index("anomalyScore"), "anomalyScore", pa.array(score))
    points = points.append_column("anomalyReason", pa.array(reason))
    points = points.append_column("valueScore", pa.array(value_score))
    return points.append_column("forestScore", pa.array(forest_score, pa.float64()))


def test_the_hover_and_the_marker_say_why_from_the_reason_and_the_channel_scores() -> None:
    points = _explained(_points(n=30, flagged=(20, 25)))
    fig = figures.series_figure(points)
    value = _trace(fig, figures.VALUE)
    assert "why: %{customdata[6]}" in value.hovertemplate
    assert value.customdata[20][6] == "value, value channel 95.0, forest 0.0"
    assert value.customdata[25][6] == "forest, value channel 10.0, forest 95.0"
    score1 = points.column("anomalyScore")[1].as_py()
    assert value.customdata[1][6] == f"value, value channel {score1:.1f}, forest 0.0"
    assert value.customdata[3][6].endswith(f"value channel {points.column('anomalyScore')[3].as_py():.1f}")
    assert "forest" not in value.customdata[3][6]  # a NULL score is left out
    marker = _trace(fig, figures.ANOMALY)
    assert [row[1] for row in marker.customdata] == [value.customdata[20][6], value.customdata[25][6]]
    assert [row[0] for row in marker.customdata] == [95, 95]
    assert len(_trace(fig, figures.HELD).x) == 0  # every score equals its channels': nothing held
    # older results: NULL reason and scores
    assert figures.why_text(None, None, None) == "not recorded"
    assert figures.why_text(None, float("nan"), None) == "not recorded"


def test_points_held_after_an_alert_are_marked_and_say_so() -> None:
    points = _explained(_points(n=30, flagged=(20,)), held=(21, 22, 23))
    held = figures.held_after_alert(points)
    assert np.flatnonzero(held).tolist() == [21, 22, 23]
    fig = figures.series_figure(points)
    marker = _trace(fig, figures.HELD)
    assert list(marker.x) == [(T0 + i * STEP).strftime("%Y-%m-%d %H:%M:%S") for i in (21, 22, 23)]
    assert list(marker.y) == [points.column("aggregatedMeasureValue")[i].as_py() for i in (21, 22, 23)]
    value = _trace(fig, figures.VALUE)
    assert value.customdata[22][6] == "value, value channel 100.0, forest 0.0; held after an alert"
    assert "held" not in value.customdata[20][6] and "held" not in value.customdata[24][6]
    # without the channel scores (older results) nothing can be told: nothing is marked
    old = points.drop_columns(["valueScore", "forestScore"])
    assert not figures.held_after_alert(old).any()
    assert len(_trace(figures.series_figure(old), figures.HELD).x) == 0
    # NULL channel scores in a mixed frame are never held
    nulls = points.set_column(
        points.schema.get_field_index("valueScore"), "valueScore", pa.nulls(points.num_rows, pa.float64())
    )
    nulls = nulls.set_column(
        nulls.schema.get_field_index("forestScore"), "forestScore", pa.nulls(nulls.num_rows, pa.float64())
    )
    assert not figures.held_after_alert(nulls).any()


def test_the_band_of_a_non_negative_measure_stays_at_or_above_zero() -> None:
    n = 40
    value = np.where(np.arange(n) % 2 == 0, 0.0, 10.0)  # counts swinging between 0 and 10
    points = pa.table(
        {
            "windowStart": pa.array([T0 + i * STEP for i in range(n)], pa.timestamp("us", tz="UTC")),
            "aggregatedMeasureValue": value,
            "expectedValue": np.full(n, 5.0),
            "anomalyScore": np.zeros(n),
            "anomalyDecisionThreshold": np.full(n, 70.0),
            "anomalyDecision": np.zeros(n, np.int8),
        }
    )
    low = np.array(_trace(figures.series_figure(points), figures.BAND_LOW).y, dtype=float)
    assert np.nanmin(low) == 0.0  # the unclipped band (5 ± 3 × 5) would reach -10


def test_learning_stretches_are_shaded_up_to_the_first_scored_window() -> None:
    points = _points(n=30, flagged=())
    stages = ["LEARNING"] * 10 + ["INFERENCE"] * 15 + ["LEARNING"] * 5  # a reset at the end
    points = points.append_column("modelStage", pa.array(stages))
    fig = figures.series_figure(points)
    x = figures.time_strings(points.column("windowStart"))
    spans = [(s.x0, s.x1) for s in fig.layout.shapes if s.name == "learning"]
    assert spans == [(x[0], x[10]), (x[25], x[29])]
    assert all(s.fillcolor == figures.LEARNING_FILL for s in fig.layout.shapes)
    assert figures.series_figure(_points(n=30, flagged=())).layout.shapes == ()  # no stage: no shading
