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
``missing_dimension``, ``bad_dimension``, ``bad_measure:<field>``, ``non_finite:<field>``,
``missing_measure`` (no configured measure present and no ``count`` measure).
A measure field that is absent or null in an otherwise valid event is not a reject: the event
still counts for the other measures, and the parser counts ``absent:<field>``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, cast

import msgspec
import numpy as np

from streams.config import DetectorSpec
from streams.series import SeriesRegistry

logger = logging.getLogger(__name__)

EMPTY = "empty"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
MISSING_DIMENSION = "missing_dimension"
BAD_DIMENSION = "bad_dimension"
MISSING_MEASURE = "missing_measure"

#: Timestamps outside [0001-01-01, 10000-01-01) UTC are bad: a datetime cannot hold them.
MIN_TIMESTAMP_MS = -62_135_596_800_000
MAX_TIMESTAMP_MS = 253_402_300_800_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: Longest timestamp string the vectorized parser looks at (longer ones go to datetime.fromisoformat).
_VEC_MAX_LEN = 40
#: Largest dense table of dimension-code combinations (entries; int64): 32 MB.
_DENSE_COMBOS = 1 << 22


def bad_measure(field_name: str) -> str:
    return f"bad_measure:{field_name}"


def non_finite(field_name: str) -> str:
    return f"non_finite:{field_name}"


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


def iso_to_ms(text: str) -> int | None:
    """ISO-8601 text → epoch ms (naive = UTC; sub-millisecond digits truncated), None if invalid."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        ms = (parsed - _EPOCH) // _MS
    except OverflowError:
        return None
    return ms if MIN_TIMESTAMP_MS <= ms < MAX_TIMESTAMP_MS else None


def timestamp_to_ms(value: Any) -> int | None:
    """A decoded timestamp field (ISO string or epoch-ms number) → epoch ms, None if invalid."""
    if isinstance(value, str):
        return iso_to_ms(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if MIN_TIMESTAMP_MS <= value < MAX_TIMESTAMP_MS else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        ms = math.floor(value)
        return ms if MIN_TIMESTAMP_MS <= ms < MAX_TIMESTAMP_MS else None
    return None


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
    dims: list[str] = []
    for name in spec.dimensions:
        v = obj.get(name)
        if v is None:
            return MISSING_DIMENSION
        text = dimension_text(v)
        if text is None:
            return BAD_DIMENSION
        dims.append(text)
    values: list[float] = []
    present: list[bool] = []
    for m in spec.measures:
        if m.aggregation == "count":
            values.append(1.0)
            present.append(True)
            continue
        v = obj.get(m.field)
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
        values.append(f)
        present.append(True)
    if not any(present):
        return MISSING_MEASURE
    return ParsedEvent(ts, tuple(dims), tuple(values), tuple(present))


# ---------------------------------------------------------------------------------------------
# Vectorized ISO-8601 timestamps


_POW10 = 10 ** np.arange(9, -1, -1, dtype=np.int64)


def _digits(mat: np.ndarray, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns a..b-1 of a code-point matrix as one decimal number per row, and where all are digits."""
    cols = mat[:, a:b].astype(np.int64) - 48
    ok = ((cols >= 0) & (cols <= 9)).all(axis=1)
    value: np.ndarray = cols @ _POW10[10 - (b - a) :]
    return value, np.asarray(ok)


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm), vectorized."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = np.where(m > 2, m - 3, m + 9)
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days: np.ndarray = era * 146097 + doe - 719468
    return days


_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_YEARS = np.arange(10_000, dtype=np.int64)
#: 1 where the year (0..9999) is a leap year
_LEAP = ((_YEARS % 4 == 0) & ((_YEARS % 100 != 0) | (_YEARS % 400 == 0))).astype(np.int64)
#: days from 1970-01-01 to January 1st of the year
_DAYS_BEFORE_YEAR = _days_from_civil(_YEARS, np.ones_like(_YEARS), np.ones_like(_YEARS))
#: [leap, month] → length of the month / days from January 1st to its first day (month 0 unused)
_MONTH_LEN = np.stack([_MONTH_DAYS, _MONTH_DAYS + (np.arange(13) == 2)])
_DAYS_BEFORE_MONTH = np.stack([np.concatenate([[0, 0], np.cumsum(row[1:12])]) for row in _MONTH_LEN])


_LAYOUT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)?", re.ASCII)
#: byte columns of the digits in ``YYYY-MM-DDTHH:MM:SS``
_DATE_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])


def _iso_fixed_layout(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The common case: every string has the first one's length and layout (one producer).

    Returns None when the batch is not uniform; otherwise ms and ok like :func:`iso_to_ms_many`.
    """
    n = len(texts)
    first = texts[0]
    width = len(first)
    layout = _LAYOUT.fullmatch(first)
    if layout is None:
        return None
    joined = "\x00".join(texts)
    # one NUL per separator and the total length: every string is exactly `width` long
    if len(joined) != n * (width + 1) - 1 or not joined.isascii() or joined.count("\x00") != n - 1:
        return None
    mat = np.frombuffer((joined + "\x00").encode("ascii"), dtype=np.uint8).reshape(n, width + 1)
    return _iso_matrix(mat[:, :width], layout)


def _iso_matrix(mat: np.ndarray, layout: re.Match[str]) -> tuple[np.ndarray, np.ndarray]:
    """ISO timestamps of one layout (``layout`` = the first row's match) from a uint8[n, width] matrix."""
    width = mat.shape[1]
    first = layout.string
    nfrac = len(layout.group(1)) - 1 if layout.group(1) else 0
    zpos = 19 + (nfrac + 1 if nfrac else 0)
    zone = layout.group(2) or ""
    lit = [(4, "-"), (7, "-"), (10, first[10]), (13, ":"), (16, ":")]
    digit_cols = list(_DATE_DIGITS)
    if nfrac:
        lit.append((19, "."))
        digit_cols += range(20, 20 + nfrac)
    if zone == "Z":
        lit.append((zpos, "Z"))
    elif zone:
        lit.append((zpos + 3, ":"))
        digit_cols += [zpos + 1, zpos + 2, zpos + 4, zpos + 5]
    digits = mat[:, :width] - np.uint8(48)  # wraps: a non-digit becomes >= 10
    ok = (digits[:, digit_cols] < 10).all(axis=1)
    if zone and zone != "Z":
        sign = mat[:, zpos]
        ok &= (sign == 43) | (sign == 45)  # '+' or '-', row by row
    lit_cols = np.array([c for c, _ in lit])
    ok &= (mat[:, lit_cols] == np.array([ord(ch) for _, ch in lit], dtype=np.uint8)).all(axis=1)
    dt = digits.T.astype(np.int64)  # one contiguous row per character position

    def num(*cols: int) -> np.ndarray:
        v: np.ndarray = dt[cols[0]]
        for c in cols[1:]:
            v = v * 10 + dt[c]
        return v

    year, month, day = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    hour, minute, second = num(11, 12), num(14, 15), num(17, 18)
    millis = num(*range(20, 20 + min(nfrac, 3))) * 10 ** (3 - min(nfrac, 3)) if nfrac else 0
    off_h = num(zpos + 1, zpos + 2) if zone and zone != "Z" else 0
    off_m = num(zpos + 4, zpos + 5) if zone and zone != "Z" else 0
    # table lookups instead of the civil-date arithmetic: years 0..9999 (0 is invalid), months 0..12
    month_ok = (month >= 1) & (month <= 12)
    leap = _LEAP[year]
    mcol = np.where(month_ok, month, 0)
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= _MONTH_LEN[leap, mcol])
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59) & (off_h <= 23) & (off_m <= 59)
    days = _DAYS_BEFORE_YEAR[year] + _DAYS_BEFORE_MONTH[leap, mcol] + day - 1
    ms = days * 86_400_000 + ((hour * 60 + minute) * 60 + second) * 1000 + millis
    if zone and zone != "Z":
        ms -= np.where(sign == 45, -1, 1) * (off_h * 60 + off_m) * 60_000
    ok &= (ms >= MIN_TIMESTAMP_MS) & (ms < MAX_TIMESTAMP_MS)
    return np.where(ok, ms, 0), ok


def iso_to_ms_many(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`iso_to_ms` for the common spellings; the rest is left to the caller.

    Handles ``YYYY-MM-DD[T ]HH:MM:SS[.f…][Z|±HH:MM]``; everything else (and anything invalid)
    comes back with ``ok`` False. Where ``ok`` is True the result equals :func:`iso_to_ms`.

    Returns:
        (ms int64[n], ok bool[n])
    """
    n = len(texts)
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out, np.zeros(0, dtype=bool)
    if not all(type(t) is str for t in texts):
        return out, np.zeros(n, dtype=bool)
    fixed = _iso_fixed_layout(texts)
    if fixed is not None:
        return fixed
    arr = np.array(texts, dtype=object if max(map(len, texts)) > _VEC_MAX_LEN else None)
    if arr.dtype.kind != "U":
        return out, np.zeros(n, dtype=bool)
    width = arr.dtype.itemsize // 4
    if width < 19:
        return out, np.zeros(n, dtype=bool)
    mat = np.zeros((n, width + 8), dtype=np.uint32)  # zero padding: reads past the end see NUL
    mat[:, :width] = arr.view(np.uint32).reshape(n, width)
    year, ok = _digits(mat, 0, 4)
    month, ok2 = _digits(mat, 5, 7)
    day, ok3 = _digits(mat, 8, 10)
    hour, ok4 = _digits(mat, 11, 13)
    minute, ok5 = _digits(mat, 14, 16)
    second, ok6 = _digits(mat, 17, 19)
    ok &= ok2 & ok3 & ok4 & ok5 & ok6
    ok &= (mat[:, 4] == 45) & (mat[:, 7] == 45) & (mat[:, 13] == 58) & (mat[:, 16] == 58)
    ok &= (mat[:, 10] == 84) | (mat[:, 10] == 32)  # 'T' or ' '
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    mdays = _MONTH_DAYS[np.clip(month, 0, 12)] + ((month == 2) & leap)
    ok &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= mdays)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    # fraction: '.' then 1..9 digits (more digits are left to the fallback)
    frac = mat[:, 19] == 46
    fd = mat[:, 20:29].astype(np.int64) - 48
    isd = (fd >= 0) & (fd <= 9)
    nfrac = np.where(isd.all(axis=1), 9, np.argmin(isd, axis=1))
    ok &= ~frac | (nfrac >= 1)
    take = np.arange(3) < nfrac[:, None]
    millis = np.where(frac, (np.where(take, fd[:, :3], 0) * np.array([100, 10, 1])).sum(axis=1), 0)
    zpos = np.where(frac, 20 + nfrac, 19)
    rows = np.arange(n)
    zc = mat[rows, zpos]
    naive = zc == 0
    zulu = (zc == 90) & (mat[rows, zpos + 1] == 0)
    signed = (zc == 43) | (zc == 45)
    zone = np.stack([mat[rows, zpos + k] for k in range(1, 7)], axis=1).astype(np.int64)
    zd = zone - 48
    zdig = (zd >= 0) & (zd <= 9)
    off_ok = (
        signed & zdig[:, 0] & zdig[:, 1] & (zone[:, 2] == 58) & zdig[:, 3] & zdig[:, 4] & (zone[:, 5] == 0)
    )
    off_h = zd[:, 0] * 10 + zd[:, 1]
    off_m = zd[:, 3] * 10 + zd[:, 4]
    off_ok &= (off_h <= 23) & (off_m <= 59)
    ok &= naive | zulu | off_ok
    offset_ms = np.where(off_ok, np.where(zc == 45, -1, 1) * (off_h * 60 + off_m) * 60_000, 0)
    days = _days_from_civil(year, month, day)
    ms = days * 86_400_000 + ((hour * 60 + minute) * 60 + second) * 1000 + millis - offset_ms
    ok &= (ms >= MIN_TIMESTAMP_MS) & (ms < MAX_TIMESTAMP_MS)
    out[ok] = ms[ok]
    return out, ok


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

        rejects: list[tuple[int, str]] = []
        if slow.any():
            for i in np.flatnonzero(slow).tolist():
                result = parse_event(values[i], self.spec)
                if isinstance(result, str):
                    rejects.append((i, result))
                    continue
                ts_ms[i] = result.timestamp_ms
                combo[i] = self.registry.combo_for(result.dims)
                values_arr[i] = result.values
                present[i] = result.present
                slow[i] = False
        valid = ~slow
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
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, TypeError):
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
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, TypeError):
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
        if type(texts[0]) is str:
            try:
                ms, ok = _iso_fixed_layout(texts) or iso_to_ms_many(texts)
            except TypeError:  # not all strings: the join refused
                ms, ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
            if texts is not raw:
                ok &= np.fromiter((v is not None for v in raw), dtype=bool, count=n)
            if not ok.all():  # unusual spellings or types: the reference, timestamp only
                for i in np.flatnonzero(~ok).tolist():
                    v = timestamp_to_ms(raw[i])
                    if v is not None:
                        ms[i] = v
                        ok[i] = True
            return ms, ok
        kinds = set(map(type, raw))
        if kinds == {int}:
            try:
                ints = np.array(raw, dtype=np.int64)
            except OverflowError:
                pass  # beyond int64: the per-value path says bad_timestamp
            else:
                return ints, (ints >= MIN_TIMESTAMP_MS) & (ints < MAX_TIMESTAMP_MS)
        ms = np.zeros(n, dtype=np.int64)
        ok = np.zeros(n, dtype=bool)
        for i, v in enumerate(raw):
            t = timestamp_to_ms(v)
            if t is not None:
                ms[i] = t
                ok[i] = True
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
        for d, get in enumerate(self._dim_getters):
            col = list(map(get, events))
            raw_codes = self._dim_alias[d]
            c = list(map(raw_codes.get, col))
            if None in c:
                for i in [i for i, code in enumerate(c) if code is None]:
                    raw = col[i]
                    code = raw_codes.get(raw)  # registered by an earlier row of this batch
                    if code is None:
                        text = dimension_text(raw)
                        if text is None:  # missing or not a scalar: the reference decides
                            slow[i] = True
                            c[i] = 0
                            continue
                        code = self._dim_code(d, text)
                        if type(raw) is str or type(raw) is int:
                            # str and int keys cannot collide in a dict (1.0 == 1 and True == 1 could)
                            raw_codes[raw] = code
                    c[i] = code
            codes[d] = np.asarray(c, dtype=np.int64)
        return self._combo_lookup(codes, slow)

    def _dim_code(self, d: int, text: str) -> int:
        code = self._dim_text_codes[d].get(text)
        if code is None:
            code = len(self._dim_texts[d])
            self._dim_text_codes[d][text] = code
            self._dim_texts[d].append(text)
        return code

    def _combo_lookup(self, codes: np.ndarray, slow: np.ndarray) -> np.ndarray:
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
            try:
                arr = np.array(col, dtype=np.float64)
            except (OverflowError, TypeError, ValueError):
                arr = np.zeros(n, dtype=np.float64)
                for i, v in enumerate(col):
                    try:
                        arr[i] = float(v)
                    except (OverflowError, TypeError, ValueError):
                        slow[i] = True
            finite = np.isfinite(arr)
            if not finite.all():
                slow |= ~finite
                arr[~finite] = 0.0
            values[:, m] = arr
        if self._has_value_measure:
            slow |= ~present.any(axis=1)
        values[~present] = 0.0
        return values, present
