"""The result record: one per scored window, on the results topic and in Parquet.

The contract fields (names, types and meaning) follow the reference cloud stack; see
../shared/DESIGN.md. Extra fields come after them. This module is the one place that
defines the schema: streams/ builds records with it and dashboard/ reads with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import pyarrow as pa

#: Separator for the hashed identity; it cannot appear in a UTF-8 text field by accident.
_SEP = "\x1f"

DIMENSION_TYPE = pa.struct([("name", pa.string()), ("value", pa.string())])

#: The contract fields, in order, with their Arrow types.
CONTRACT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("detectorName", pa.string(), nullable=False),
    pa.field("measure", pa.string(), nullable=False),
    pa.field("timeseriesId", pa.string(), nullable=False),
    pa.field("dimensionList", pa.list_(DIMENSION_TYPE), nullable=False),
    pa.field("aggregatedMeasureValue", pa.float64()),
    pa.field("detectionPeriodStartTime", pa.string(), nullable=False),
    pa.field("detectionPeriodEndTime", pa.string(), nullable=False),
    pa.field("anomalyScore", pa.float64(), nullable=False),
    pa.field("anomalyDecisionThreshold", pa.float64(), nullable=False),
    pa.field("anomalyDecision", pa.int8(), nullable=False),
    pa.field("anomalyConfidenceScore", pa.float64(), nullable=False),
    pa.field("modelStage", pa.string(), nullable=False),
    pa.field("processedDataPoints", pa.int64(), nullable=False),
    pa.field("expectedValue", pa.float64()),
)

#: Extra fields (welcome by the contract as long as the ones above keep their meaning).
EXTRA_FIELDS: tuple[pa.Field, ...] = (
    pa.field("rawScore", pa.float64()),
    pa.field("windowStart", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("missingWindow", pa.bool_(), nullable=False),
    pa.field("warmStarted", pa.bool_(), nullable=False),
)

RESULT_SCHEMA = pa.schema([*CONTRACT_FIELDS, *EXTRA_FIELDS])
CONTRACT_NAMES: tuple[str, ...] = tuple(f.name for f in CONTRACT_FIELDS)

STAGE_LEARNING = "LEARNING"
STAGE_INFERENCE = "INFERENCE"


def timeseries_id(
    detector: str, measure: str, dimensions: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """Hex SHA-256 of detector, measure and the sorted ``name=value`` pairs: stable across runs.

    Example:
        >>> timeseries_id("bookstore", "quantity", {"product_name": "item-A"})[:12]
        '61547b118584'
    """
    pairs = sorted(dimensions.items() if isinstance(dimensions, Mapping) else dimensions)
    text = _SEP.join([detector, measure, *(f"{k}={v}" for k, v in pairs)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def format_period(ms: int) -> str:
    """Epoch milliseconds → ``YYYY-MM-DD HH:MM:SS`` in UTC (the contract's window bound format)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
