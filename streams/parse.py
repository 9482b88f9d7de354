"""Parse a whole consumed batch of JSON events into numpy columns, with a reason for every reject.

The fast path decodes each message with a typed msgspec decoder (C, ~0.3 µs for a 100-byte event,
unknown fields skipped without building objects), pulls the configured fields out as columns,
parses ISO-8601 timestamps vectorized with numpy and maps dimension values to combination codes
with one dict lookup per dimension and event. A bad message only costs its own row. Any row the
fast path does not fully accept (a decode or type error, a null, an unusual timestamp spelling)
goes to :func:`parse_event`, the single reference of the contract, which either accepts it with the
same result or names the reason. A property test checks that both agree. (``pyarrow.json`` over
the batch as NDJSON was measured too, and is slower: see docs/ARCHITECTURE.md.)

Reasons (stable strings, sent as the ``reason`` header of the dead-letter record):
``empty``, ``invalid_json``, ``not_an_object``, ``missing_timestamp``, ``bad_timestamp``,
``missing_dimension``, ``bad_dimension``, ``dimension_too_long`` (a dimension value of more than
:data:`MAX_DIMENSION_BYTES` bytes of UTF-8), ``bad_measure:<field>``, ``non_finite:<field>``,
``out_of_range:<field>`` (a finite measure beyond ±:data:`MAX_MEASURE_ABS`),
``missing_measure`` (no configured measure present and no ``count`` measure), ``cardinality_limit``
(a valid event of a new series when the detector already has ``max_series``).
A measure field that is absent or null in an otherwise valid event is not a reject: the event
still counts for the other measures, and the parser counts ``absent:<field>``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, cast

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams.config import DetectorSpec
from streams.series import SeriesRegistry
from streams.timestamps import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, epoch_ms, timestamp_to_ms

logger = logging.getLogger(__name__)

EMPTY = "empty"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
MISSING_DIMENSION = "missing_dimension"
BAD_DIMENSION = "bad_dimension"
MISSING_MEASURE = "missing_measure"
DIMENSION_TOO_LONG = "dimension_too_long"
CARDINALITY_LIMIT = "cardinality_limit"

#: Longest dimension value taken (bytes of UTF-8). Every result record carries its dimension values
#: (results topic, Parquet, alerts), and a series is named by them: a longer value, typically an id
#: or a payload put in a dimension by mistake, would make records that no longer fit the results
#: topic and one series per event. Such events are dead-lettered as ``dimension_too_long``.
MAX_DIMENSION_BYTES = 1024

#: Largest measure magnitude taken. The scoring stage works on differences and spreads of window
#: values; beyond about 1e307 they overflow to inf and the detector refuses the whole step. 1e300
#: leaves room for sums of many such values (a window whose aggregate passes it is skipped, counted).
MAX_MEASURE_ABS = 1e300

#: What a msgspec decode of one hostile message may raise (RecursionError: nesting deeper than the
#: decoder's limit, even inside a field that is skipped).
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, TypeError, RecursionError)

#: Largest dense table of dimension-code combinations (entries; int64): 32 MB.
_DENSE_COMBOS = 1 << 22


def bad_measure(field_name: str) -> str:
    return f"bad_measure:{field_name}"


def non_finite(field_name: str) -> str:
    return f"non_finite:{field_name}"


def out_of_range(field_name: str) -> str:
    return f"out_of_range:{field_name}"


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """The valid rows of one consumed batch, as columns, plus the rejects.

    Attributes:
        size: number of messages in the consumed batch.
        index: int64[n], each valid row's position in the consumed batch (ascending).
        timestamp_ms: int64[n], event time in epoch milliseconds (UTC).
        combo: int64[n], dimension-combination codes in ``registry``.
        values: float64[n, n_measures], measure values (1.0 for ``count``; 0.0 where absent).
        present: bool[n, n_measures], which measures the row carries.
        rejects: ``(position in the consumed batch, reason)`` for every invalid message.
        registry: the registry the combination codes refer to.
    """

    size: int
    index: np.ndarray
    timestamp_ms: np.ndarray
    combo: np.ndarray
    values: np.ndarray
    present: np.ndarray
    rejects: list[tuple[int, str]]
    registry: SeriesRegistry = field(repr=False)

    def __len__(self) -> int:
        return len(self.index)


# ---------------------------------------------------------------------------------------------
# The reference: one event, plain Python. Everything the fast path accepts must agree with it.


def _reject_constant(name: str) -> float:
    # NaN / Infinity literals are not JSON; Python's json accepts them unless told otherwise
    raise ValueError(f"not JSON: {name}")


_json_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def dimension_problem(text: str) -> str | None:
    """Why a dimension text cannot name a series (None when it can): text that is not valid
    Unicode (a lone surrogate, from a ``\\ud800`` escape) cannot be encoded, hashed or written."""
    if text.isascii():
        return DIMENSION_TOO_LONG if len(text) > MAX_DIMENSION_BYTES else None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return BAD_DIMENSION
    return DIMENSION_TOO_LONG if size > MAX_DIMENSION_BYTES else None


def dimension_text(value: Any) -> str | None:
    """A decoded dimension value → its canonical string, None when it is not a scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return None


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """One valid event, as :func:`parse_event` reads it."""

    timestamp_ms: int
    dims: tuple[str, ...]
    values: tuple[float, ...]
    present: tuple[bool, ...]


def parse_event(raw: bytes | None, spec: DetectorSpec) -> ParsedEvent | str:
    """Parse one message by the contract: the event, or the reason it is rejected.

    This is the reference the batch parser agrees with; it is ~10x slower and used only for the
    rows the fast path does not accept outright.
    """
    if raw is None or not raw.strip():
        return EMPTY
    try:
        obj = _json_decoder.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return INVALID_JSON
    if not isinstance(obj, dict):
        return NOT_AN_OBJECT
    ts_raw = obj.get(spec.timestamp_field)
    if ts_raw is None:
        return MISSING_TIMESTAMP
    ts = timestamp_to_ms(ts_raw)
    if ts is None:
        return BAD_TIMESTAMP
    dims = _event_dims(obj, spec)
    if isinstance(dims, str):
        return dims
    measures = _event_measures(obj, spec)
    if isinstance(measures, str):
        return measures
    values, present = measures
    if not any(present):
        return MISSING_MEASURE
    return ParsedEvent(ts, dims, values, present)


def _event_dims(obj: dict[str, Any], spec: DetectorSpec) -> tuple[str, ...] | str:
    """The event's dimension texts, or the reason they are refused."""
    dims: list[str] = []
    for name in spec.dimensions:
        v = obj.get(name)
        if v is None:
            return MISSING_DIMENSION
        text = dimension_text(v)
        if text is None:
            return BAD_DIMENSION
        problem = dimension_problem(text)
        if problem is not None:
            return problem
        dims.append(text)
    return tuple(dims)


def _event_measures(
    obj: dict[str, Any], spec: DetectorSpec
) -> tuple[tuple[float, ...], tuple[bool, ...]] | str:
    """The event's measure values and which are present, or the reason they are refused."""
    values: list[float] = []
    present: list[bool] = []
    for m in spec.measures:
        v = 1.0 if m.aggregation == "count" else obj.get(m.field)
        if v is None:
            values.append(0.0)
            present.append(False)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            return bad_measure(m.field)
        try:
            f = float(v)
        except OverflowError:
            return non_finite(m.field)
        if not math.isfinite(f):
            return non_finite(m.field)
        if abs(f) > MAX_MEASURE_ABS:
            return out_of_range(m.field)
        values.append(f)
        present.append(True)
    return tuple(values), tuple(present)


def _floats(col: list[Any], slow: np.ndarray) -> np.ndarray:
    """A measure column as float64; values that do not convert are 0 and marked ``slow``."""
    try:
        return np.array(col, dtype=np.float64)
    except (OverflowError, TypeError, ValueError):
        arr = np.zeros(len(col), dtype=np.float64)
        for i, v in enumerate(col):
            try:
                arr[i] = float(v)
            except (OverflowError, TypeError, ValueError):
                slow[i] = True
        return arr


def _timestamp_column(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """A decoded timestamp column of one kind (text, or epoch ms as numbers), vectorized; a column of
    mixed types comes back not ok, for the per-value reference."""
    n = len(values)
    kinds = set(map(type, values))
    if kinds == {str}:
        return epoch_ms(values)
    if kinds == {int}:
        try:
            ms = np.array(values, dtype=np.int64)
        except OverflowError:  # beyond int64: per value
            return np.zeros(n, np.int64), np.zeros(n, bool)
        return ms, (ms >= MIN_TIMESTAMP_MS) & (ms < MAX_TIMESTAMP_MS)
    if kinds <= {int, float}:  # epoch ms as numbers: floats are floored
        try:
            f = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond any float, next to floats: per value
            return np.zeros(n, np.int64), np.zeros(n, bool)
        ok = np.isfinite(f) & (f >= MIN_TIMESTAMP_MS) & (f < MAX_TIMESTAMP_MS)
        return np.floor(np.where(ok, f, 0.0)).astype(np.int64), ok
    return np.zeros(n, np.int64), np.zeros(n, bool)


# ---------------------------------------------------------------------------------------------
# The batch parser


class EventParser:
    """Parse consumed batches of one detector's events into :class:`ParsedBatch` columns.

    Example:
        >>> from streams.config import DetectorSpec, MeasureSpec
        >>> spec = DetectorSpec(name="shop", topic="orders", dimensions=("product",),
        ...                     measures=(MeasureSpec(field="quantity"),))
        >>> parser = EventParser(spec)
        >>> batch = parser.parse([b'{"timestamp": 60000, "product": "A", "quantity": 2}', b'oops'])
        >>> batch.timestamp_ms.tolist(), batch.values.tolist(), batch.rejects
        ([60000], [[2.0]], [(1, 'invalid_json')])

    Args:
        spec: the detector whose fields to read.
        registry: where combination codes live; a new one when omitted (share it with the
            detector's WindowStates: ``WindowState(spec, parser.registry)``).
    """

    def __init__(self, spec: DetectorSpec, registry: SeriesRegistry | None = None) -> None:
        self.spec = spec
        self.registry = registry or SeriesRegistry(
            spec.name, spec.dimensions, tuple(m.field for m in spec.measures)
        )
        self.counters: Counter[str] = Counter()
        self.n_measures = len(spec.measures)
        # attribute names are synthetic (f0, f1, …) so that any JSON key works as a field name
        names: dict[str, str] = {}

        def attr(json_key: str) -> str:
            if json_key not in names:
                names[json_key] = f"f{len(names)}"
            return names[json_key]

        self._ts_attr = attr(spec.timestamp_field)
        self._dim_attrs = [attr(d) for d in spec.dimensions]
        self._measure_attrs = [None if m.aggregation == "count" else attr(m.field) for m in spec.measures]
        allowed: dict[str, set[type]] = {}
        roles: Counter[str] = Counter()
        for a, kinds in [
            (self._ts_attr, {str, int, float}),
            *((a, {str, int}) for a in self._dim_attrs),
            *((a, {int, float}) for a in self._measure_attrs if a is not None),
        ]:
            allowed.setdefault(a, set()).update(kinds)
            roles[a] += 1
        order = {str: 0, int: 1, float: 2}
        types: dict[str, Any] = {}
        for a, kinds in allowed.items():
            t: Any = None
            for k in sorted(kinds, key=order.__getitem__):
                t = k if t is None else t | k
            types[a] = t | None
        #: a field read in two roles (e.g. dimension and measure) carries the union of their types,
        #: so its values get a per-value type check
        self._shared = {a for a, c in roles.items() if c > 1}
        struct = msgspec.defstruct(
            "Event",
            [(a, types[a], None) for a in names.values()],
            rename={a: k for k, a in names.items()},
            gc=False,  # scalars only: no cycles, and 10,000 tracked objects a batch would wake the GC
        )
        self._decode = msgspec.json.Decoder(struct).decode
        self._get_ts = attrgetter(self._ts_attr)
        self._dim_getters = [attrgetter(a) for a in self._dim_attrs]
        # per dimension: decoded value → code, canonical text → code, code → canonical text
        self._dim_alias: list[dict[object, int]] = [{} for _ in self._dim_attrs]
        self._dim_text_codes: list[dict[str, int]] = [{} for _ in self._dim_attrs]
        self._dim_texts: list[list[str]] = [[] for _ in self._dim_attrs]
        # dimension codes → combination code: a dense table while small, and always this dict
        self._known: dict[tuple[int, ...], int] = {}
        self._table: np.ndarray | None = None
        if 16 ** len(self._dim_attrs) <= _DENSE_COMBOS:
            self._table = np.full((16,) * len(self._dim_attrs), -1, dtype=np.int64)
        self._get_measure = [None if a is None else attrgetter(a) for a in self._measure_attrs]
        self._has_value_measure = any(a is not None for a in self._measure_attrs)

    # -- the batch path -----------------------------------------------------------------------

    def parse(self, values: Sequence[bytes | None]) -> ParsedBatch:
        """Parse one consumed batch (message values in consumption order).

        Returns:
            The valid rows as columns and ``rejects`` (position, reason) for the others; every
            position appears exactly once in ``index`` or ``rejects``.
        """
        n = len(values)
        self.counters["events"] += n
        if n == 0:
            return self._empty(0)
        ts_ms, slow, combo, values_arr, present = self._columns(values)

        rejects = self._slow_rows(values, slow, ts_ms, combo, values_arr, present)
        valid = ~slow
        capped = valid & (combo < 0)  # a new series beyond max_series (see _combo_lookup)
        if capped.any():
            rejects += [(i, CARDINALITY_LIMIT) for i in np.flatnonzero(capped).tolist()]
            valid &= ~capped
        if rejects:
            self.counters.update(reason for _, reason in rejects)
        index = np.flatnonzero(valid)
        if len(index) < n:
            ts_ms, combo, values_arr, present = ts_ms[index], combo[index], values_arr[index], present[index]
        absent = len(index) * self.n_measures - int(present.sum())
        if absent:
            for m, measure in enumerate(self.spec.measures):
                k = len(index) - int(present[:, m].sum())
                if k:
                    self.counters[f"absent:{measure.field}"] += k
        self.counters["valid"] += len(index)
        return ParsedBatch(n, index, ts_ms, combo, values_arr, present, rejects, self.registry)

    def _slow_rows(
        self,
        values: Sequence[bytes | None],
        slow: np.ndarray,
        ts_ms: np.ndarray,
        combo: np.ndarray,
        values_arr: np.ndarray,
        present: np.ndarray,
    ) -> list[tuple[int, str]]:
        """The rows the fast path did not accept, through the reference: filled in, or rejected."""
        rejects: list[tuple[int, str]] = []
        for i in np.flatnonzero(slow).tolist():
            result = parse_event(values[i], self.spec)
            if isinstance(result, str):
                rejects.append((i, result))
                continue
            code = self.registry.lookup(result.dims)
            if code is None:
                if self._at_cap():
                    rejects.append((i, CARDINALITY_LIMIT))
                    continue
                code = self.registry.combo_for(result.dims)
            ts_ms[i] = result.timestamp_ms
            combo[i] = code
            values_arr[i] = result.values
            present[i] = result.present
            slow[i] = False
        return rejects

    def from_columns(
        self, timestamps_ms: np.ndarray, dimensions: Sequence[pa.Array], measures: np.ndarray
    ) -> ParsedBatch:
        """Valid events that are columns already (history files), without a JSON round trip.

        Args:
            timestamps_ms: int64[n], epoch ms.
            dimensions: per dimension of the spec, the text of each row (as :func:`dimension_text`
                would give it).
            measures: float64[n, k], the values of the spec's measures other than ``count``, in
                spec order: finite, or NaN where the row has no value for that measure (absent, as
                a live event without the field).

        Returns:
            The same batch :meth:`parse` returns for the JSON of these events.
        """
        n = len(timestamps_ms)
        self.counters["events"] += n
        self.counters["valid"] += n
        codes = np.empty((len(dimensions), n), dtype=np.int64)
        for d, col in enumerate(dimensions):
            enc = pc.dictionary_encode(col)
            if isinstance(enc, pa.ChunkedArray):
                enc = enc.combine_chunks()
            lut = np.array([self._dim_code(d, t) for t in enc.dictionary.to_pylist()], dtype=np.int64)
            codes[d] = lut[enc.indices.to_numpy(zero_copy_only=False)] if len(lut) else 0
        if dimensions:
            combo = self._combo_lookup(codes, np.zeros(n, dtype=bool), capped=False)
        else:
            self.registry.combo_for(())
            combo = np.zeros(n, dtype=np.int64)
        values = np.ones((n, self.n_measures), dtype=np.float64)
        value_cols = [m for m, a in enumerate(self._measure_attrs) if a is not None]
        present = np.ones((n, self.n_measures), dtype=bool)
        given = np.isfinite(measures)
        values[:, value_cols] = np.where(given, measures, 0.0)
        present[:, value_cols] = given
        if not given.all():
            for j, m in enumerate(value_cols):
                k = int((~given[:, j]).sum())
                if k:
                    self.counters[f"absent:{self.spec.measures[m].field}"] += k
        index = np.arange(n, dtype=np.int64)
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        return ParsedBatch(n, index, ts, combo, values, present, [], self.registry)

    def _columns(
        self, values: Sequence[bytes | None]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Columns through msgspec, one message at a time: (ts, slow, combo, values, present)."""
        n = len(values)
        msgs = cast("Sequence[bytes]", values)
        if None in values:  # a tombstone / null value; cheap C scan when there is none
            msgs = [b"" if v is None else v for v in values]
        try:
            events = list(map(self._decode, msgs))
            bad_decode: list[int] = []
        except _DECODE_ERRORS:
            events, bad_decode = self._decode_each(msgs)
        slow = np.zeros(n, dtype=bool)
        if bad_decode:
            slow[bad_decode] = True
        ts_ms, ts_ok = self._timestamps(list(map(self._get_ts, events)))
        slow |= ~ts_ok
        combo = self._combos(events, slow)
        values_arr, present = self._measures(events, slow)
        return ts_ms, slow, combo, values_arr, present

    def _empty(self, n: int) -> ParsedBatch:
        m = self.n_measures
        return ParsedBatch(
            n,
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, m)),
            np.zeros((0, m), bool),
            [],
            self.registry,
        )

    def _decode_each(self, msgs: Sequence[bytes]) -> tuple[list[Any], list[int]]:
        """Decode message by message; the ones that fail become None and are listed."""
        decode = self._decode
        events: list[Any] = []
        bad: list[int] = []
        for i, m in enumerate(msgs):
            try:
                events.append(decode(m))
            except _DECODE_ERRORS:
                events.append(None)
                bad.append(i)
        if bad:
            placeholder = self._placeholder()
            for i in bad:
                events[i] = placeholder
        return events, bad

    def _placeholder(self) -> Any:
        """A decoded event whose every field is None (stands in for rows handled slowly)."""
        return self._decode(b"{}")

    def _timestamps(self, raw: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Decoded timestamp values (str, int, float or None) → (epoch ms int64[n], ok bool[n])."""
        n = len(raw)
        texts = raw
        if None in raw:  # absent timestamps, or rows that failed to decode: stand-ins keep the layout
            first = next((v for v in raw if v is not None), None)
            texts = [first if v is None else v for v in raw]
        ms, ok = _timestamp_column(texts)
        if texts is not raw:
            ok &= np.fromiter((v is not None for v in raw), dtype=bool, count=n)
        if not ok.all():  # unusual spellings or types: the reference, timestamp only
            for i in np.flatnonzero(~ok).tolist():
                v = timestamp_to_ms(raw[i])
                if v is not None:
                    ms[i], ok[i] = v, True
        return ms, ok

    def _combos(self, events: list[Any], slow: np.ndarray) -> np.ndarray:
        """Combination codes of the rows: one dict lookup per dimension, then one table lookup.

        Each dimension maps its decoded values to small codes (a dict of fresh strings is twice as
        fast as a dict of tuples); the codes index a dense table of combinations while the product
        of the dimensions' cardinalities stays small, a dict of code tuples beyond.
        """
        n = len(events)
        if not self._dim_getters:
            if len(self.registry) == 0:
                self.registry.combo_for(())
            return np.zeros(n, dtype=np.int64)
        codes = np.empty((len(self._dim_getters), n), dtype=np.int64)
        capped: list[int] = []
        for d, get in enumerate(self._dim_getters):
            col = list(map(get, events))
            raw_codes = self._dim_alias[d]
            c = list(map(raw_codes.get, col))
            if None in c:
                self._new_codes(d, col, c, slow, capped)
            codes[d] = np.asarray(c, dtype=np.int64)
        if not capped:
            return self._combo_lookup(codes, slow)
        skip = slow.copy()
        skip[capped] = True
        combo = self._combo_lookup(codes, skip)
        combo[capped] = -1
        return combo

    def _new_codes(self, d: int, col: list[Any], c: list[Any], slow: np.ndarray, capped: list[int]) -> None:
        """Codes of dimension ``d``'s values seen for the first time (``c`` is None there)."""
        raw_codes = self._dim_alias[d]
        for i in [i for i, code in enumerate(c) if code is None]:
            raw = col[i]
            code = raw_codes.get(raw)  # registered by an earlier row of this batch
            if code is None:
                text = dimension_text(raw)
                if text is None or dimension_problem(text) is not None:
                    # missing, not a scalar, not Unicode or too long: the reference decides
                    slow[i] = True
                    c[i] = 0
                    continue
                if text not in self._dim_text_codes[d] and self._at_cap():
                    # a value never seen makes a new series: beyond max_series nothing of it is
                    # kept (a unique id in a dimension must not grow these tables)
                    capped.append(i)
                    c[i] = 0
                    continue
                code = self._dim_code(d, text)
                if type(raw) is str or type(raw) is int:
                    # str and int keys cannot collide in a dict (1.0 == 1 and True == 1 could)
                    raw_codes[raw] = code
            c[i] = code

    def _dim_code(self, d: int, text: str) -> int:
        code = self._dim_text_codes[d].get(text)
        if code is None:
            code = len(self._dim_texts[d])
            self._dim_text_codes[d][text] = code
            self._dim_texts[d].append(text)
        return code

    def _at_cap(self) -> bool:
        """Whether a new dimension combination would pass the spec's ``max_series``."""
        cap = self.spec.max_series
        return cap > 0 and (len(self.registry) + 1) * self.n_measures > cap

    def _combo_lookup(self, codes: np.ndarray, slow: np.ndarray, capped: bool = True) -> np.ndarray:
        """Combination codes of dimension codes, registering new combinations; with ``capped``, a
        new one beyond ``max_series`` is not registered and its rows get -1."""
        sizes = [len(t) for t in self._dim_texts]
        if self._table is not None and any(s > c for s, c in zip(sizes, self._table.shape, strict=True)):
            caps = tuple(max(16, 2 * s) for s in sizes)
            self._table = None
            if math.prod(caps) <= _DENSE_COMBOS:
                self._table = np.full(caps, -1, dtype=np.int64)
                if self._known:
                    known = np.array(list(self._known), dtype=np.int64).T
                    self._table[tuple(known)] = list(self._known.values())
        combo: np.ndarray
        if self._table is not None:
            combo = self._table[tuple(codes)]
        else:
            get = self._known.get
            combo = np.array([get(k, -1) for k in zip(*codes.tolist(), strict=True)], dtype=np.int64)
        unknown = (combo < 0) & ~slow
        if unknown.any():
            for i in np.flatnonzero(unknown).tolist():
                key = tuple(codes[:, i].tolist())
                code = self._known.get(key)
                if code is None:
                    if capped and self._at_cap():
                        combo[i] = -1
                        continue
                    texts = tuple(self._dim_texts[d][k] for d, k in enumerate(key))
                    code = self.registry.combo_for(texts)
                    self._known[key] = code
                    if self._table is not None:
                        self._table[key] = code
                combo[i] = code
        return combo

    def _measures(self, events: list[Any], slow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(events)
        values = np.ones((n, self.n_measures), dtype=np.float64)
        present = np.ones((n, self.n_measures), dtype=bool)
        for m, get in enumerate(self._get_measure):
            if get is None:
                continue  # count: 1.0 for every event
            col = list(map(get, events))
            if self._measure_attrs[m] in self._shared and not set(map(type, col)) <= {int, float, type(None)}:
                for i, v in enumerate(col):
                    if v is not None and type(v) is not int and type(v) is not float:
                        slow[i] = True
                        col[i] = 0
            if None in col:
                nulls = np.array([v is None for v in col])
                col = [0 if v is None else v for v in col]
                present[nulls, m] = False
            arr = _floats(col, slow)
            finite = np.abs(arr) <= MAX_MEASURE_ABS  # False for NaN and inf too
            if not finite.all():
                slow |= ~finite
                arr[~finite] = 0.0
            values[:, m] = arr
        if self._has_value_measure:
            slow |= ~present.any(axis=1)
        values[~present] = 0.0
        return values, present
