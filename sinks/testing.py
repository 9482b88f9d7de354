"""Test helpers that ship with sinks/: build result tables in RESULT_SCHEMA without a detector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa

from sinks.record import RESULT_SCHEMA, STAGE_INFERENCE, format_period, timeseries_id


def result_table(
    *,
    detector: str = "shop",
    measure: str = "quantity",
    dimensions: Mapping[str, str] | None = None,
    start_ms: int = 1_714_521_600_000,
    window_ms: int = 60_000,
    values: Sequence[float] = (),
    scores: Sequence[float] | None = None,
    expected: Sequence[float] | None = None,
    threshold: float = 70.0,
    confidence: float = 90.0,
    stage: str = STAGE_INFERENCE,
) -> pa.Table:
    """One series' consecutive windows as a RESULT_SCHEMA table; decision = score > threshold.

    Args:
        values: the aggregated measure per window (one row each).
        scores: anomalyScore per window (default 0).
        expected: expectedValue per window (default: the value itself).
    """
    dims = dict(dimensions or {"product_name": "item-A"})
    n = len(values)
    scores = list(scores) if scores is not None else [0.0] * n
    expected = list(expected) if expected is not None else list(values)
    sid = timeseries_id(detector, measure, dims)
    starts = [start_ms + i * window_ms for i in range(n)]
    rows = {
        "detectorName": [detector] * n,
        "measure": [measure] * n,
        "timeseriesId": [sid] * n,
        "dimensionList": [[{"name": k, "value": v} for k, v in sorted(dims.items())]] * n,
        "aggregatedMeasureValue": [float(v) for v in values],
        "detectionPeriodStartTime": [format_period(s) for s in starts],
        "detectionPeriodEndTime": [format_period(s + window_ms) for s in starts],
        "anomalyScore": [float(s) for s in scores],
        "anomalyDecisionThreshold": [threshold] * n,
        "anomalyDecision": [1 if s > threshold else 0 for s in scores],
        "anomalyConfidenceScore": [confidence] * n,
        "modelStage": [stage] * n,
        "processedDataPoints": [100 + i for i in range(n)],
        "expectedValue": [float(e) for e in expected],
        "rawScore": [float(s) / 50.0 for s in scores],
        "windowStart": starts,
        "missingWindow": [False] * n,
        "warmStarted": [False] * n,
        "expectedLow": [float(e) * 0.9 for e in expected],
        "expectedHigh": [float(e) * 1.1 for e in expected],
        "anomalyReason": ["value" if s > 0 else "" for s in scores],
        "valueScore": [float(s) for s in scores],
        "forestScore": [0.0] * n,
    }
    return pa.table(rows, schema=RESULT_SCHEMA)
