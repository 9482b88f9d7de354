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
