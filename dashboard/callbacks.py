"""Callbacks: thin wiring from page inputs to :mod:`dashboard.views` and back. No queries here.

Every value from the page first goes through a converter of :mod:`dashboard.inputs`, which raises
``InputError`` (answered 400 by the app) for what the page cannot have sent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dash import Dash, Input, Output, State, ctx, no_update

import sinks.query as q
from dashboard import figures, inputs, layout, views

logger = logging.getLogger(__name__)


def register(app: Dash, data_dir: Path, metrics_urls: tuple[str, ...] = ()) -> None:
    """Attach every callback of the page to ``app``, reading results from ``data_dir``."""

    # the live switch needs no data: it runs in the browser (no round trip)
    app.clientside_callback(
        "function (live) { return !(live || []).includes('live'); }",
        Output("tick", "disabled"),
        Input("live", "value"),
    )

    @app.callback(
        Output("kpis", "children"),
        Output("detector", "options"),
        Input("tick", "n_intervals"),
        Input("period", "value"),
    )
    def refresh_kpis(tick: Any, period: Any) -> tuple[list[Any], list[dict[str, str]]]:
        inputs.count(tick, "n_intervals")
        period = inputs.period(period)
        cards = [layout.kpi_card(*card) for card in views.kpi_values(data_dir, period, metrics_urls)]
        return cards, views.detector_options(data_dir)

    @app.callback(
        Output("measure", "options"),
        Input("detector", "value"),
        Input("period", "value"),
        Input("tick", "n_intervals"),
    )
    def refresh_measures(detector: Any, period: Any, tick: Any) -> list[dict[str, str]]:
        inputs.count(tick, "n_intervals")
        detector, period = inputs.text(detector, "detector"), inputs.period(period)
        return views.measure_options(data_dir, period, detector)

    @app.callback(
        Output("series", "options"),
        Output("series", "value"),
        Output("chart", "figure", allow_duplicate=True),
        Output("chart-key", "data", allow_duplicate=True),
        Input("detector", "value"),
        Input("measure", "value"),
        Input("series", "search_value"),
        Input("series", "value"),
        Input("period", "value"),
        Input("tick", "n_intervals"),
        State("url", "search"),
        prevent_initial_call="initial_duplicate",
    )
    def refresh_series(
        detector: Any, measure: Any, search: Any, selected: Any, period: Any, tick: Any, url_search: Any
    ) -> tuple[list[dict[str, str]], Any, Any, Any]:
        inputs.count(tick, "n_intervals")
        detector, measure = inputs.text(detector, "detector"), inputs.text(measure, "measure")
        search, selected = inputs.text(search, "search"), inputs.series_id(selected)
        period, url_search = inputs.period(period), inputs.text(url_search, "url")
        if selected:
            options = views.series_options(data_dir, period, detector, measure, search, selected)
            return options, no_update, no_update, no_update
        linked = views.focus_from_url(url_search)  # an alert's link names the series to open
        if linked:
            options = views.series_options(data_dir, period, detector, measure, search, linked["series"])
            return options, linked["series"], no_update, no_update
        options = views.series_options(data_dir, period, detector, measure, search, None)
        pick = views.default_series(options)
        if pick is None:
            return options, no_update, no_update, no_update
        # the default series' chart comes with it: the chart callback then finds it drawn
        # (saves the round trip that would wait for this callback's series value)
        try:
            fig = views.chart(data_dir, period, pick, None)
        except q.QueryError as exc:
            logger.warning("chart query failed series=%s error=%s", pick, exc)
            return options, pick, no_update, no_update
        return options, pick, fig, views.chart_key(pick, period, None)

    @app.callback(
        Output("series", "value", allow_duplicate=True),
        Output("focus", "data"),
        Input("anomalies", "active_cell"),
        Input("incidents", "active_cell"),
        Input("url", "search"),
        prevent_initial_call="initial_duplicate",
    )
    def open_series(cell: Any, incident_cell: Any, search: Any) -> tuple[Any, Any]:
        cell = inputs.record(cell, "active_cell", ("row_id", "column_id"))
        incident_cell = inputs.record(incident_cell, "active_cell", ("row_id", "column_id"))
        search = inputs.text(search, "url")
        if ctx.triggered_id == "anomalies":
            focus = views.focus_from_row((cell or {}).get("row_id"))
        elif ctx.triggered_id == "incidents":
            focus = views.focus_from_incident((incident_cell or {}).get("row_id"))
        else:  # page load: an alert's link
            focus = views.focus_from_url(search)
        if focus is None:
            return no_update, no_update
        return focus["series"], focus

    @app.callback(
        Output("chart", "figure"),
        Output("chart-key", "data"),
        Input("series", "value"),
        Input("period", "value"),
        Input("focus", "data"),
        Input("tick", "n_intervals"),
        State("chart-key", "data"),
    )
    def refresh_chart(series: Any, period: Any, focus: Any, tick: Any, drawn: Any) -> tuple[Any, Any]:
        inputs.count(tick, "n_intervals")
        series, period = inputs.series_id(series), inputs.period(period)
        focus = inputs.record(focus, "focus", ("series", "time", "start", "end"))
        drawn = inputs.text(drawn, "chart-key")
        if ctx.triggered_id != "tick" and series and drawn:
            # the first page draws the default series before the picker names it: no redraw then
            default = views.chart_key(None, period, focus)
            if drawn in (views.chart_key(series, period, focus), default + series):
                return no_update, views.chart_key(series, period, focus)
        try:
            fig = views.chart(data_dir, period, series, focus)
        except q.QueryError as exc:
            logger.warning("chart query failed series=%s error=%s", series, exc)
            return figures.empty_figure(f"Cannot read the results: {exc}"), None
        key = views.chart_key(series, period, focus)
        if not series and fig.layout.uirevision:
            key += str(fig.layout.uirevision)  # the default series it drew
        return fig, key

    @app.callback(
        Output("anomalies", "data"),
        Output("table-message", "children"),
        Input("period", "value"),
        Input("anomalies", "filter_query"),
        Input("anomalies", "sort_by"),
        Input("tick", "n_intervals"),
        State("anomalies", "data"),
    )
    def refresh_table(
        period: Any, filter_query: Any, sort_by: Any, tick: Any, current: Any
    ) -> tuple[Any, str]:
        inputs.count(tick, "n_intervals")
        period, sort_by = inputs.period(period), inputs.sort_by(sort_by)
        # the filter's length is the parser's to judge: a long paste gets a message on the page
        filter_query = inputs.text(filter_query, "filter_query", inputs.MAX_BODY_BYTES)
        current = inputs.rows(current, "anomalies.data")
        try:
            rows, message = views.anomaly_rows(data_dir, period, filter_query, sort_by)
        except q.QueryError as exc:
            logger.warning("anomaly table query failed error=%s", exc)
            return no_update, f"Cannot read the results: {exc}"
        if ctx.triggered_id == "tick" and rows == current:
            return no_update, message
        return rows, message

    @app.callback(
        Output("incidents", "data"), Output("incidents-block", "style"), Input("tick", "n_intervals")
    )
    def refresh_incidents(tick: Any) -> tuple[Any, dict[str, str]]:
        inputs.count(tick, "n_intervals")
        rows = views.incident_rows(data_dir)
        return rows, {"display": "block" if rows else "none"}
