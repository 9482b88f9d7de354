"""The result record: one per scored window, in Parquet, on the results topic and to alerts.

The contract fields (names, types and meaning) follow the reference cloud stack; see
../shared/DESIGN.md. Extra fields come after them. This module is the one place that defines the
record and builds it: :class:`ResultBatch` turns the windows of one scoring step and their scores
into columns once, and every sink reads them from there (an Arrow table for Parquet and alerts,
JSON lines for the results topic). dashboard/ reads with the same schema.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np
import pyarrow as pa

from sinks.errors import SinkError

#: Separator of the hashed identity's text (the unit separator, which ordinary text never holds).
_SEP = "\x1f"
#: Starts the length-prefixed identity text (:func:`timeseries_id`); the plain text never starts
#: with three separators (its third field is a ``name=value`` pair, never empty).
_LENGTH_PREFIXED = _SEP * 3 + "v2"

DIMENSION_TYPE = pa.struct([("name", pa.string()), ("value", pa.string())])


@dataclass(frozen=True)
class RecordField:
    """One field of the result record.

    Attributes:
        name: the field's name in Parquet and on the results topic.
        type: its Arrow type.
        nullable: whether it may be null (a NaN of a nullable float field is written as null).
        score: the attribute of the detector's ``ScoreBatch`` whose values the field carries as
            they are; None for the fields built from the windows (see :meth:`ResultBatch.build`).
    """

    name: str
    type: pa.DataType
    nullable: bool = True
    score: str | None = None

    def arrow(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


#: The contract fields, in order (../shared/DESIGN.md).
CONTRACT: tuple[RecordField, ...] = (
    RecordField("detectorName", pa.string(), nullable=False),
    RecordField("measure", pa.string(), nullable=False),
    RecordField("timeseriesId", pa.string(), nullable=False),
    RecordField("dimensionList", pa.list_(DIMENSION_TYPE), nullable=False),
    RecordField("aggregatedMeasureValue", pa.float64()),
    RecordField("detectionPeriodStartTime", pa.string(), nullable=False),
    RecordField("detectionPeriodEndTime", pa.string(), nullable=False),
    RecordField("anomalyScore", pa.float64(), nullable=False, score="anomaly_score"),
    RecordField("anomalyDecisionThreshold", pa.float64(), nullable=False, score="threshold"),
    RecordField("anomalyDecision", pa.int8(), nullable=False, score="decision"),
    RecordField("anomalyConfidenceScore", pa.float64(), nullable=False, score="confidence"),
    RecordField("modelStage", pa.string(), nullable=False),
    RecordField("processedDataPoints", pa.int64(), nullable=False, score="processed_points"),
    RecordField("expectedValue", pa.float64(), score="expected_value"),
)

#: Extra fields, welcome by the contract as long as the ones above keep their meaning. A field the
#: detector adds to its ScoreBatch joins the record (Parquet, results topic, alerts) with one line
#: here: ``RecordField("<recordName>", <arrow type>, score="<ScoreBatch attribute>")``.
EXTRA: tuple[RecordField, ...] = (
    RecordField("rawScore", pa.float64(), score="raw_score"),
    RecordField("windowStart", pa.timestamp("ms", tz="UTC"), nullable=False),
    RecordField("missingWindow", pa.bool_(), nullable=False),
    RecordField("warmStarted", pa.bool_(), nullable=False, score="warm_started"),
    # why: the band the value was judged normal in, the channel that carried the score and each
    # channel's own score (docs/ARCHITECTURE.md, "Scores")
    RecordField("expectedLow", pa.float64(), score="expected_low"),
    RecordField("expectedHigh", pa.float64(), score="expected_high"),
    RecordField("anomalyReason", pa.string(), score="reason_names"),
    RecordField("valueScore", pa.float64(), score="value_score"),
    RecordField("forestScore", pa.float64(), score="forest_score"),
)

RECORD_FIELDS: tuple[RecordField, ...] = (*CONTRACT, *EXTRA)
CONTRACT_FIELDS: tuple[pa.Field, ...] = tuple(f.arrow() for f in CONTRACT)
EXTRA_FIELDS: tuple[pa.Field, ...] = tuple(f.arrow() for f in EXTRA)
RESULT_SCHEMA = pa.schema([*CONTRACT_FIELDS, *EXTRA_FIELDS])
CONTRACT_NAMES: tuple[str, ...] = tuple(f.name for f in CONTRACT)

STAGE_LEARNING = "LEARNING"
STAGE_INFERENCE = "INFERENCE"


def timeseries_id(
    detector: str, measure: str, dimensions: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """Hex SHA-256 of detector, measure and the sorted ``name=value`` pairs: stable across runs.

    Two different series never share an id, whatever their text: the hashed text is the fields
    joined by ``\\x1f`` (the form every id had before, kept so that existing ids stay the same)
    when that text can be split back into them, i.e. no field holds ``\\x1f``, no dimension name
    holds ``=`` and every field is valid Unicode; otherwise a length-prefixed form that cannot be
    mistaken for the joined one (:func:`_identity_text`).

    Example:
        >>> timeseries_id("bookstore", "quantity", {"product_name": "item-A"})[:12]
        '61547b118584'
        >>> timeseries_id("s", "m", {"a": "1\\x1fb=2"}) == timeseries_id("s", "m", {"a": "1", "b": "2"})
        False
    """
    pairs = sorted(dimensions.items() if isinstance(dimensions, Mapping) else dimensions)
    return hashlib.sha256(_identity_text(str(detector), str(measure), pairs)).hexdigest()


def _identity_text(detector: str, measure: str, pairs: Sequence[tuple[Any, Any]]) -> bytes:
    """The bytes :func:`timeseries_id` hashes: one-to-one with (detector, measure, pairs).

    The joined form ``detector␟measure␟name=value␟...`` is kept wherever it is one-to-one (no
    ``␟`` inside a field and no ``=`` inside a name, so it splits back into its fields); everything
    else is written as ``␟␟␟v2`` followed by each field as ``<length>:<text>`` (surrogates kept with
    ``surrogatepass``). The joined form never starts with three ``␟`` (its third field is a pair,
    never empty), so the two forms never give the same text.
    """
    texts = [(str(k), str(v)) for k, v in pairs]
    if (
        _SEP not in detector
        and _SEP not in measure
        and not any(_SEP in k or "=" in k or _SEP in v for k, v in texts)
    ):
        try:
            return _SEP.join([detector, measure, *(f"{k}={v}" for k, v in texts)]).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: only the length-prefixed form takes it
            pass
    fields = [detector, measure, str(len(texts)), *(f for kv in texts for f in kv)]
    out = [_LENGTH_PREFIXED.encode("ascii")]
    for f in fields:
        data = f.encode("utf-8", "surrogatepass")
        out.append(b"%d:%s" % (len(data), data))
    return b"".join(out)


def format_period(ms: int) -> str:
    """Epoch milliseconds → ``YYYY-MM-DD HH:MM:SS`` in UTC (the contract's window bound format)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class ClosedWindowsLike(Protocol):
    """What :meth:`ResultBatch.build` reads of the scored windows (``streams.window.ClosedWindows``)."""

    @property
    def timeseries_id(self) -> list[str]: ...
    @property
    def measure(self) -> list[str]: ...
    @property
    def dimension_lists(self) -> list[list[dict[str, str]]]: ...

    @property
    def window_start_ms(self) -> np.ndarray: ...
    @property
    def window_end_ms(self) -> np.ndarray: ...
    @property
    def value(self) -> np.ndarray: ...
    @property
    def missing(self) -> np.ndarray: ...

    def __len__(self) -> int: ...


class ResultBatch:
    """The result records of one scoring step, as columns, built once and read by every sink.

    :meth:`table` (RESULT_SCHEMA, for Parquet and alerts) and :meth:`messages` (one JSON object per
    record, for the results topic: ``windowStart`` in epoch ms, NaN as null) are built from the
    same columns on first use and kept; :meth:`slice` gives a part that shares them (one
    partition's records of a step that scored several).

    Attributes:
        closed_at: ``time.monotonic()`` when the scored windows closed, for latency figures; None
            when unknown.
    """

    def __init__(self, columns: Mapping[str, Any], n: int, closed_at: float | None = None) -> None:
        self._columns = dict(columns)
        self._n = n
        self._table: pa.Table | None = None
        self._messages: list[bytes] | None = None
        self._parent: ResultBatch | None = None
        self._start = 0
        self.closed_at = closed_at

    @classmethod
    def build(
        cls,
        detector_name: str,
        windows: ClosedWindowsLike,
        scores: Any,
        closed_at: float | None = None,
        keys: list[str] | None = None,
    ) -> ResultBatch:
        """The records of ``windows`` scored as ``scores`` (a ``ScoreBatch``: see :class:`RecordField`).

        ``keys``: the windows' timeseriesIds when the caller has them already (they were scored).
        """
        n = len(windows)
        starts = np.asarray(windows.window_start_ms, dtype=np.int64)
        ends = np.asarray(windows.window_end_ms, dtype=np.int64)
        period = {t: format_period(t) for t in np.unique(np.concatenate([starts, ends])).tolist()}
        inference = np.asarray(scores.inference, dtype=bool)
        columns: dict[str, Any] = {
            "detectorName": [detector_name] * n,
            "measure": windows.measure,
            "timeseriesId": _Dual(windows, "timeseries_id_array", "timeseries_id", keys),
            "dimensionList": _Dual(windows, "dimension_list_array", "dimension_lists"),
            "aggregatedMeasureValue": np.asarray(windows.value, dtype=np.float64),
            "detectionPeriodStartTime": [period[t] for t in starts.tolist()],
            "detectionPeriodEndTime": [period[t] for t in ends.tolist()],
            "modelStage": np.where(inference, STAGE_INFERENCE, STAGE_LEARNING).tolist(),
            "windowStart": starts,
            "missingWindow": np.asarray(windows.missing, dtype=bool),
        }
        for f in RECORD_FIELDS:
            if f.score is not None:
                columns[f.name] = _score_column(f, scores, n)
        return cls(columns, n, closed_at)

    @classmethod
    def from_table(cls, table: pa.Table) -> ResultBatch:
        """Records that are a RESULT_SCHEMA table already (tools, tests)."""
        table = table.select(list(RESULT_SCHEMA.names)).cast(RESULT_SCHEMA)
        batch = cls(
            {name: table.column(name).combine_chunks() for name in RESULT_SCHEMA.names}, table.num_rows
        )
        batch._table = table
        return batch

    def __len__(self) -> int:
        return self._n

    @property
    def keys(self) -> list[str]:
        """timeseriesId of each record (the results topic's message key)."""
        if self._parent is not None:
            return self._parent.keys[self._start : self._start + self._n]
        return list(_pylist(self._columns["timeseriesId"]))

    def table(self) -> pa.Table:
        """The records as a RESULT_SCHEMA table."""
        if self._table is None:
            if self._parent is not None:
                self._table = self._parent.table().slice(self._start, self._n)
            else:
                self._table = pa.Table.from_arrays(
                    [_arrow(f, self._columns[f.name], self._n) for f in RECORD_FIELDS], schema=RESULT_SCHEMA
                )
        return self._table

    def messages(self) -> list[bytes]:
        """One compact JSON object per record: every field by name, windowStart in epoch ms, NaN as null."""
        if self._messages is None:
            if self._parent is not None:
                self._messages = self._parent.messages()[self._start : self._start + self._n]
            else:
                cols = [_pylist(self._columns[f.name], self._n) for f in RECORD_FIELDS]
                # one JSON object per line (strings never hold a raw newline); non-finite floats → null
                lines = msgspec.json.Encoder().encode_lines(list(map(_json_record(), *cols)))
                self._messages = lines.split(b"\n")[:-1]
        return self._messages

    def slice(self, start: int, stop: int) -> ResultBatch:
        """Records ``start:stop``, sharing this batch's table and messages."""
        part = ResultBatch({}, stop - start, self.closed_at)
        part._parent, part._start = (self._parent, self._start + start) if self._parent else (self, start)
        return part


class _Dual:
    """A column the windows hold twice: an Arrow array where they offer one cheaply (the table) and
    Python values (the JSON messages), each read only when a sink asks for it."""

    def __init__(self, windows: Any, arrow_method: str, attribute: str, py: list[Any] | None = None) -> None:
        self._windows = windows
        self._arrow_method = arrow_method
        self._attribute = attribute
        if py is not None:
            self.__dict__["py"] = py

    @functools.cached_property
    def py(self) -> list[Any]:
        return list(getattr(self._windows, self._attribute))

    def arrow(self, type_: pa.DataType) -> pa.Array:
        fn = getattr(self._windows, self._arrow_method, None)
        return fn() if fn is not None else pa.array(self.py, type_)


def _score_column(f: RecordField, scores: Any, n: int) -> Any:
    values = getattr(scores, f.score or "", None)
    if values is None:
        if not f.nullable:
            raise SinkError(f"the scores carry no {f.score!r}, which the record's {f.name} needs")
        return None
    return np.asarray(values, dtype=f.type.to_pandas_dtype()) if pa.types.is_primitive(f.type) else values


def _arrow(f: RecordField, values: Any, n: int) -> pa.Array:
    if isinstance(values, pa.Array):
        return values
    if values is None:
        return pa.nulls(n, f.type)
    if isinstance(values, _Dual):
        return values.arrow(f.type)
    return pa.array(values, f.type, from_pandas=f.nullable)


def _pylist(values: Any, n: int = 0) -> Sequence[Any]:
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "M":
            values = values.astype("datetime64[ms]").astype(np.int64)
        out: list[Any] = values.tolist()
        return out
    if isinstance(values, pa.Array):
        if pa.types.is_timestamp(values.type):
            values = values.cast(pa.int64())
        return values.to_pylist()  # type: ignore[no-any-return]
    if values is None:
        return [None] * n
    if isinstance(values, _Dual):
        return values.py
    return values  # type: ignore[no-any-return]


@functools.cache
def _json_record() -> Any:
    """A msgspec Struct with the record's field names, in order (encodes faster than dicts)."""
    return msgspec.defstruct("ResultRecord", [(f.name, Any) for f in RECORD_FIELDS])


def build_results(detector_name: str, windows: ClosedWindowsLike, scores: Any) -> pa.Table:
    """Result records (RESULT_SCHEMA) for scored windows, row for row (:meth:`ResultBatch.build`)."""
    return ResultBatch.build(detector_name, windows, scores).table()
