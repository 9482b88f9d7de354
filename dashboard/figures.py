"""Figures: pure functions from a result frame (a pyarrow Table) to a plotly Figure. No I/O here.

The series chart has two y axes. On the left: the window's aggregated value (line), the model's
expected value (dashed line) inside an expected band, the anomalies (red markers on the value) and
the points held after an alert (open orange circles: see :func:`held_after_alert`).
On the right (0–100): the anomaly score and the decision threshold in force (dotted line).

The band: expectedValue ± ``BAND_SIGMAS`` × the rolling standard deviation of the residual
(value − expected) over the previous ``BAND_WINDOWS`` windows, computed causally (a window's band
uses only windows before it), leaving out the windows flagged as anomalies: an anomaly widens
neither its own band nor the ones after it. Where the model has no expected value yet (LEARNING)
there is no band.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.compute as pc

BAND_SIGMAS = 3.0
BAND_WINDOWS = 48

#: Trace names (tests and the browser check find traces by these).
VALUE, EXPECTED, BAND_LOW, BAND_HIGH, SCORE, THRESHOLD, ANOMALY, HELD = (
    "value",
    "expected",
    "expected band (low)",
    "expected band",
    "anomaly score",
    "threshold",
    "anomaly",
    "held after an alert",
)

_COLORS = {
    "value": "#1f5f8b",
    "expected": "#7a7a7a",
    "band": "rgba(122,122,122,0.18)",
    "score": "#e69f00",
    "threshold": "#b8860b",
    "anomaly": "#d62728",
    "held": "#e07b00",
}

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def time_strings(column: pa.ChunkedArray | pa.Array) -> list[str]:
    """UTC timestamps → ``YYYY-MM-DD HH:MM:SS`` (plotly's date format; exact, no client time zone)."""
    seconds = pc.cast(column, pa.timestamp("s", tz="UTC"), safe=False)
    return [str(s) for s in pc.strftime(seconds, format=TIME_FORMAT).to_pylist()]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def expected_band(
    value: np.ndarray,
    expected: np.ndarray,
    windows: int = BAND_WINDOWS,
    sigmas: float = BAND_SIGMAS,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper band: expected ± sigmas × causal rolling std of (value − expected).

    Args:
        value, expected: float64[n], NaN where unknown.
        exclude: bool[n], windows whose residual must not widen later bands (the anomalies).

    Returns:
        (low, high), float64[n]; NaN where the expected value is unknown or fewer than 3 earlier
        residuals are available.
    """
    resid = value - expected
    if exclude is not None:
        resid = np.where(exclude, np.nan, resid)
    finite = np.isfinite(resid)
    r = np.where(finite, resid, 0.0)
    # prefix sums with a leading 0: the sums over the prior window [i - windows, i) are differences
    c = np.concatenate([[0.0], np.cumsum(finite)])
    s1 = np.concatenate([[0.0], np.cumsum(r)])
    s2 = np.concatenate([[0.0], np.cumsum(r * r)])
    idx = np.arange(len(value))
    lo = np.maximum(0, idx - windows)
    count = c[idx] - c[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (s1[idx] - s1[lo]) / count
        var = np.maximum((s2[idx] - s2[lo]) / count - mean * mean, 0.0)
    spread = np.where(count >= 3, np.sqrt(var), np.nan)
    half = sigmas * spread
    return expected - half, expected + half


_TEMPLATE_NAME = "plotly_white"
_template_cache: dict[str, Any] = {}


def _template() -> dict[str, Any]:
    """The expanded plotly_white template (a figure built without validation must carry it whole)."""
    if not _template_cache:
        import plotly.io as pio

        _template_cache.update(pio.templates[_TEMPLATE_NAME].to_plotly_json())
    return _template_cache


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    # The traces and layout below are fixed, tested shapes: skipping plotly's property validation
    # saves ~80 ms a chart (a third of a series switch) and changes nothing in the JSON.
    return go.Figure(data=data, layout={"template": _template(), **layout}, _validate=False)


def empty_figure(message: str) -> go.Figure:
    """A blank chart that says why it is blank."""
    return _figure(
        [],
        {
            "height": 460,
            "margin": {"l": 60, "r": 60, "t": 40, "b": 40},
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "annotations": [
                {
                    "text": message,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.5,
                    "y": 0.5,
                    "showarrow": False,
                    "font": {"size": 15, "color": "#666"},
                }
            ],
        },
    )


#: The value's hover: what was expected, the band, the score and how far the model trusts itself,
#: and why the score is what it is (the channel that carried it and each channel's own score).
VALUE_HOVER = (
    "value %{y:.4g}<br>expected %{customdata[0]:.4g} (band %{customdata[1]:.4g} to %{customdata[2]:.4g})"
    "<br>score %{customdata[3]:.1f}, confidence %{customdata[4]:.0f}, %{customdata[5]}"
    "<br>why: %{customdata[6]}<extra>value</extra>"
)


def why_text(reason: str | None, value_score: float | None, forest_score: float | None) -> str:
    """The reason of one result in words: its channel and the channels' scores.

    ``reason`` is anomalyReason (``value``, ``sustained``, ``shift``, ``forest`` or ``""`` when no channel
    stood out); all three are None in results written before the record carried them.
    """
    known = [v for v in (value_score, forest_score) if v is not None and v == v]
    if reason is None and not known:
        return "not recorded"
    parts = [reason or "no channel"]
    if value_score is not None and value_score == value_score:
        parts.append(f"value channel {value_score:.1f}")
    if forest_score is not None and forest_score == forest_score:
        parts.append(f"forest {forest_score:.1f}")
    return ", ".join(parts)


#: How far below its channels' score a point's score must be to count as held (the detector computes
#: both from the same number, so an unheld point's are equal to the bit).
HELD_MARGIN = 1e-6


def held_after_alert(points: pa.Table) -> np.ndarray:
    """bool[n]: the points whose score the detector held down after an alert (no decision of their own).

    An unheld point's anomalyScore is exactly max(valueScore, forestScore) (0 for both while
    LEARNING); after an alert the detector caps the score below the threshold for a few points, so a
    score under its channels' maximum is a held one. Older results without the channel scores (NULL)
    are never marked.
    """
    n = points.num_rows
    names = points.column_names
    if n == 0 or "valueScore" not in names or "forestScore" not in names:
        return np.zeros(n, dtype=bool)
    channels = np.fmax(_floats(points, "valueScore"), _floats(points, "forestScore"))  # NaN only if both are
    score = _floats(points, "anomalyScore")
    undecided = np.asarray(points.column("anomalyDecision").to_numpy(zero_copy_only=False)) != 1
    with np.errstate(invalid="ignore"):
        return np.asarray(undecided & (score < channels - HELD_MARGIN), dtype=bool)


def _column(points: pa.Table, name: str) -> list[Any]:
    return points.column(name).to_pylist() if name in points.column_names else [None] * points.num_rows


def _hover_facts(
    points: pa.Table, expected: np.ndarray, low: np.ndarray, high: np.ndarray, score: np.ndarray
) -> list[list[Any]]:
    """Per point: [expected, band low, band high, score, confidence, stage, why] (None where unknown)."""
    n = points.num_rows
    names = points.column_names
    confidence = _floats(points, "anomalyConfidenceScore") if "anomalyConfidenceScore" in names else None
    stage = points.column("modelStage").to_pylist() if "modelStage" in names else [""] * n
    why = [
        why_text(r, v, f)
        for r, v, f in zip(
            _column(points, "anomalyReason"),
            _column(points, "valueScore"),
            _column(points, "forestScore"),
            strict=True,
        )
    ]
    for i in np.flatnonzero(held_after_alert(points)):
        why[i] += "; held after an alert"
    numbers = [expected, low, high, score, confidence if confidence is not None else np.full(n, np.nan)]
    rows = np.column_stack(numbers).tolist() if n else []
    return [
        [None if np.isnan(v) else v for v in row] + [stage[i] or "", why[i]]  # NaN: blank in the tooltip
        for i, row in enumerate(rows)
    ]


def series_figure(
    points: pa.Table,
    title: str = "",
    focus: tuple[dt.datetime, dt.datetime] | None = None,
    revision: str = "",
) -> go.Figure:
    """The series chart from :func:`sinks.query.series_points` rows (oldest first).

    Args:
        points: columns windowStart, aggregatedMeasureValue, expectedValue, anomalyScore,
            anomalyDecisionThreshold, anomalyDecision; anomalyConfidenceScore, modelStage, anomalyReason,
            valueScore and forestScore, when there, go into the value's hover (others are ignored).
        title: shown above the chart.
        focus: an x range to zoom to (a clicked anomaly's neighbourhood).
        revision: plotly ``uirevision``: the user's zoom survives refreshes with the same revision.
    """
    if points.num_rows == 0:
        return empty_figure("No results for this series in the selected period")
    x = time_strings(points.column("windowStart"))
    value = _floats(points, "aggregatedMeasureValue")
    expected = _floats(points, "expectedValue")
    score = _floats(points, "anomalyScore")
    threshold = _floats(points, "anomalyDecisionThreshold")
    flagged = np.asarray(points.column("anomalyDecision").to_numpy(zero_copy_only=False)) == 1
    low, high = expected_band(value, expected, exclude=flagged)
    if len(value) and np.nanmin(value) >= 0:
        low = np.maximum(low, 0.0)  # a non-negative measure (a count, a sum of sales) never expects < 0
    x_arr = np.array(x, dtype=object)
    facts = _hover_facts(points, expected, low, high, score)
    why_flagged = [facts[i][6] for i in np.flatnonzero(flagged)]
    held = held_after_alert(points)
    line = "lines"
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "x": x,
            "y": low,
            "name": BAND_LOW,
            "mode": line,
            "line": {"width": 0},
            "hoverinfo": "skip",
            "showlegend": False,
            "legendgroup": "band",
        },
        {
            "type": "scatter",
            "x": x,
            "y": high,
            "name": BAND_HIGH,
            "mode": line,
            "line": {"width": 0},
            "fill": "tonexty",
            "fillcolor": _COLORS["band"],
            "hoverinfo": "skip",
            "legendgroup": "band",
        },
        {
            "type": "scatter",
            "x": x,
            "y": expected,
            "name": EXPECTED,
            "mode": line,
            "line": {"color": _COLORS["expected"], "dash": "dash", "width": 1.5},
        },
        {
            "type": "scatter",
            "x": x,
            "y": value,
            "name": VALUE,
            "mode": line,
            "line": {"color": _COLORS["value"], "width": 2},
            "customdata": facts,
            "hovertemplate": VALUE_HOVER,
        },
        {
            "type": "scatter",
            "x": x,
            "y": score,
            "name": SCORE,
            "mode": line,
            "yaxis": "y2",
            "line": {"color": _COLORS["score"], "width": 1},
            "opacity": 0.8,
        },
        {
            "type": "scatter",
            "x": x,
            "y": threshold,
            "name": THRESHOLD,
            "mode": line,
            "yaxis": "y2",
            "line": {"color": _COLORS["threshold"], "dash": "dot", "width": 1.5},
        },
        {
            "type": "scatter",
            "x": x_arr[flagged].tolist(),
            "y": value[flagged],
            "name": ANOMALY,
            "mode": "markers",
            "marker": {"color": _COLORS["anomaly"], "size": 11, "symbol": "x", "line": {"width": 1}},
            "customdata": [[s, w] for s, w in zip(score[flagged].tolist(), why_flagged, strict=True)],
            "hovertemplate": (
                "%{x}<br>value %{y:.4g}<br>score %{customdata[0]:.1f}"
                "<br>why: %{customdata[1]}<extra>anomaly</extra>"
            ),
        },
        {
            "type": "scatter",
            "x": x_arr[held].tolist(),
            "y": value[held],
            "name": HELD,
            "mode": "markers",
            "marker": {"color": _COLORS["held"], "size": 9, "symbol": "circle-open", "line": {"width": 2}},
            "hoverinfo": "skip",  # the value's hover says it (a second line would repeat it)
        },
    ]
    xaxis: dict[str, Any] = {"showgrid": True, "type": "date"}
    if focus is not None:
        xaxis["range"] = [focus[0].strftime(TIME_FORMAT), focus[1].strftime(TIME_FORMAT)]
    layout: dict[str, Any] = {
        "height": 460,
        "title": {"text": title, "x": 0.01, "font": {"size": 14}},
        "margin": {"l": 60, "r": 60, "t": 50, "b": 40},
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.12},
        "xaxis": xaxis,
        "yaxis": {"title": {"text": "value"}},
        "yaxis2": {
            "title": {"text": "anomaly score"},
            "overlaying": "y",
            "side": "right",
            "range": [0, 105],
            "tickvals": [0, 20, 40, 60, 80, 100],
            "showgrid": False,
        },
    }
    shapes = learning_shapes(points, x)
    if shapes:
        layout["shapes"] = shapes
    if revision:
        layout["uirevision"] = revision
    return _figure(data, layout)


#: The shading of the windows a series' model was still learning in (its score is 0 there).
LEARNING_FILL = "rgba(120, 120, 120, 0.12)"


def learning_shapes(points: pa.Table, x: list[str]) -> list[dict[str, Any]]:
    """Grey bands behind the LEARNING stretches (from their first window to the next scored one)."""
    if "modelStage" not in points.column_names or not x:
        return []
    learning = np.array([s == "LEARNING" for s in points.column("modelStage").to_pylist()], dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], learning, [False]]).astype(np.int8)))
    shapes = []
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        shapes.append(
            {
                "type": "rect",
                "name": "learning",
                "xref": "x",
                "yref": "paper",
                "x0": x[start],
                "x1": x[min(stop, len(x) - 1)],
                "y0": 0,
                "y1": 1,
                "fillcolor": LEARNING_FILL,
                "line": {"width": 0},
                "layer": "below",
            }
        )
    return shapes


def window_width(points: pa.Table) -> dt.timedelta | None:
    """The series' window length: the most common gap between consecutive windows (None if < 2)."""
    if points.num_rows < 2:
        return None
    ts = pc.cast(points.column("windowStart"), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    gaps = np.diff(ts)
    gaps = gaps[gaps > 0]
    if len(gaps) == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return dt.timedelta(microseconds=int(values[np.argmax(counts)]))
