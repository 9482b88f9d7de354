"""The page: KPI cards, the series explorer (pickers + chart), the anomaly table, incidents."""

from __future__ import annotations

from typing import Any

from dash import dash_table, dcc, html

from dashboard import views

_CARD = {
    "flex": "1 1 150px",
    "padding": "10px 14px",
    "border": "1px solid #e3e3e3",
    "borderRadius": "6px",
    "background": "#fafafa",
    "minWidth": "150px",
}
_ROW = {"display": "flex", "gap": "10px", "flexWrap": "wrap", "alignItems": "flex-end"}


def kpi_card(card_id: str, label: str, text: str, note: str = "") -> html.Div:
    return html.Div(
        [
            html.Div(label, style={"fontSize": "12px", "color": "#666"}),
            html.Div(text, id=card_id, className="kpi-value", style={"fontSize": "20px", "fontWeight": 600}),
            html.Div(note, style={"fontSize": "11px", "color": "#888", "minHeight": "14px"}),
        ],
        style=_CARD,
    )


def _labeled(label: str, component: Any, width: str) -> html.Div:
    return html.Div(
        [html.Label(label, style={"fontSize": "12px", "color": "#555"}), component],
        style={"flex": f"0 1 {width}", "minWidth": "140px"},
    )


def table_key() -> html.Div:
    """The anomaly table's key: the row colours, and what each "why" means."""
    swatch = {"display": "inline-block", "padding": "0 6px", "marginRight": "4px", "border": "1px solid #ddd"}
    return html.Div(
        [
            html.Span("Key: ", style={"fontWeight": 600}),
            html.Span(
                f"score ≥ {views.STRONG_SCORE}",
                className="key-strong",
                style={**swatch, "color": views.STRONG_COLOR, "fontWeight": 600},
            ),
            html.Span("far past the threshold; ", style={"marginRight": "6px"}),
            html.Span("score", className="key-plain", style={**swatch, "color": views.PLAIN_COLOR}),
            html.Span("above the threshold. ", style={"marginRight": "6px"}),
            html.Span("Why: ", style={"fontWeight": 600}),
            html.Span("; ".join(f"{name}: {meaning}" for name, meaning in views.REASON_KEY) + ". "),
            html.Span(
                "On the chart, an open orange circle marks a point held below the threshold after an alert "
                "(one incident, one alert)."
            ),
        ],
        id="table-key",
        style={"fontSize": "12px", "color": "#555", "marginBottom": "4px"},
    )


def build_layout(refresh_ms: int) -> html.Div:
    """The whole page; data arrive through callbacks (nothing is queried while building it)."""
    columns = [{"id": cid, "name": name, "type": kind} for cid, name, kind in views.TABLE_COLUMNS]
    return html.Div(
        [
            dcc.Location(id="url", refresh=False),
            dcc.Interval(id="tick", interval=refresh_ms, n_intervals=0),
            dcc.Store(id="focus", data=None),
            dcc.Store(id="chart-key", data=None),
            html.Div(
                [
                    html.H2("cutstream", style={"margin": "0 12px 0 0"}),
                    html.Span("streaming anomaly detection", style={"color": "#777"}),
                    html.Div(
                        [
                            dcc.Dropdown(
                                id="period",
                                value=views.DEFAULT_PERIOD,
                                clearable=False,
                                searchable=False,
                                options=[{"label": v, "value": k} for k, v in views.PERIOD_LABELS.items()],
                                persistence=True,
                                persistence_type="session",
                                style={"width": "170px"},
                            ),
                            dcc.Checklist(
                                id="live",
                                options=[{"label": " live", "value": "live"}],
                                value=["live"],
                                persistence=True,
                                persistence_type="session",
                                style={"marginLeft": "10px"},
                            ),
                        ],
                        style={"marginLeft": "auto", "display": "flex", "alignItems": "center"},
                    ),
                ],
                style={"display": "flex", "alignItems": "center", "marginBottom": "12px"},
            ),
            html.Div(
                id="kpis",
                style={**_ROW, "marginBottom": "14px"},
                children=[kpi_card(cid, label, "…") for cid, label in _KPI_PLACEHOLDERS],
            ),
            html.Div(
                [
                    _labeled(
                        "detector",
                        dcc.Dropdown(
                            id="detector",
                            placeholder="all detectors",
                            persistence=True,
                            persistence_type="session",
                        ),
                        "200px",
                    ),
                    _labeled(
                        "measure",
                        dcc.Dropdown(
                            id="measure",
                            placeholder="all measures",
                            persistence=True,
                            persistence_type="session",
                        ),
                        "200px",
                    ),
                    _labeled(
                        "series (type to search dimension values; top series by anomaly score first)",
                        dcc.Dropdown(
                            id="series",
                            placeholder="pick a series",
                            optionHeight=34,
                            persistence=True,
                            persistence_type="session",
                        ),
                        "640px",
                    ),
                ],
                style={**_ROW, "marginBottom": "6px"},
            ),
            dcc.Graph(id="chart", config={"displaylogo": False}, style={"height": "460px"}),
            html.H4("Anomalies", style={"margin": "14px 0 4px"}),
            html.Div(
                "Newest first. Click a row to open its series around that window. Filter with the row "
                "under the headers (e.g. >80 in score, host-1 in dimensions, 2026-01-05 in window start).",
                style={"fontSize": "12px", "color": "#666", "marginBottom": "4px"},
            ),
            table_key(),
            html.Div(
                id="table-message",
                role="alert",
                style={"color": "#a94442", "fontSize": "13px", "minHeight": "18px"},
            ),
            dash_table.DataTable(
                id="anomalies",
                columns=columns,
                data=[],
                row_selectable=False,
                sort_action="custom",
                sort_mode="multi",
                sort_by=[],
                filter_action="custom",
                filter_query="",
                page_action="native",
                page_size=15,
                style_table={"overflowX": "auto"},
                style_cell={
                    "fontFamily": "system-ui, sans-serif",
                    "fontSize": "13px",
                    "padding": "4px 8px",
                    "textAlign": "left",
                    "cursor": "pointer",
                    "color": views.PLAIN_COLOR,
                },
                style_header={"fontWeight": 600, "background": "#f3f3f3"},
                style_data_conditional=[
                    {
                        "if": {"filter_query": f"{{anomalyScore}} >= {views.STRONG_SCORE}"},
                        "color": views.STRONG_COLOR,
                        "fontWeight": 600,
                    }
                ],
            ),
            html.Div(
                id="incidents-block",
                style={"display": "none"},
                children=[
                    html.H4("Incidents (alerts)", style={"margin": "16px 0 4px"}),
                    dash_table.DataTable(
                        id="incidents",
                        data=[],
                        sort_action="native",
                        filter_action="native",
                        columns=[{"id": cid, "name": name} for cid, name in views.INCIDENT_COLUMNS],
                        page_action="native",
                        page_size=10,
                        style_cell={
                            "fontFamily": "system-ui, sans-serif",
                            "fontSize": "12px",
                            "textAlign": "left",
                            "cursor": "pointer",
                        },
                        style_header={"fontWeight": 600, "background": "#f3f3f3"},
                    ),
                ],
            ),
        ],
        style={
            "fontFamily": "system-ui, sans-serif",
            "maxWidth": "1400px",
            "margin": "0 auto",
            "padding": "14px 20px",
        },
    )


_KPI_PLACEHOLDERS = [
    ("kpi-series", "series tracked"),
    ("kpi-points", "data points processed"),
    ("kpi-anomalies", "anomalies"),
    ("kpi-confidence", "mean confidence"),
    ("kpi-freshness", "data freshness"),
    ("kpi-lag", "worker lag"),
]
