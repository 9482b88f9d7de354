"""Test and benchmark helpers that ship with dashboard/ (nothing in the app imports this module)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dashboard.views import DEFAULT_PERIOD, first_page_parts


def first_page(
    data_dir: Path | str, period: str = DEFAULT_PERIOD, metrics_urls: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Everything the first page shows, with per-phase timings (``cutstream bench dashboard``)."""
    out: dict[str, Any] = {"timings": {}}
    for name, query in first_page_parts(data_dir, period, metrics_urls):
        t0 = time.perf_counter()
        out[name] = query()
        out["timings"][name] = time.perf_counter() - t0
    rows, message = out.pop("anomaly table")
    return {
        "kpis": out.pop("kpis"),
        "series_options": out.pop("top series"),
        "rows": rows,
        "message": message,
        "figure": out.pop("chart"),
        "timings": out["timings"],
    }


def hostile_filters(n: int) -> dict[str, str]:
    """Filter texts of about ``n`` characters that stress the table's filter parser, by family.

    The first cost the regular expression it replaced quadratic time; the others exercise each
    scanner step (the linearity test and ``cutstream bench dashboard`` use them).
    """
    return {
        "run of spaces inside a bare value": "{dimensions} contains a" + " " * n + "b",
        "many terms": " && ".join(["{anomalyScore} > 1"] * (n // 18)),
        "many quoted terms holding &&": " && ".join(['{dimensions} contains "x && y"'] * (n // 30)),
        "unterminated quote with escapes": '{dimensions} contains "' + 'a\\"' * (n // 3),
        "opening braces": "{" * n,
        "unclosed columns": "{a" * (n // 2),
        "separators only": "{a} = " + " && " * (n // 4),
        "spaces before the operator": "{anomalyScore}" + " " * n + "> 1",
        "long column name": "{" + "c" * n + "} = 1",
    }
