"""Timestamps → epoch milliseconds (UTC), vectorized: the one timestamp parser of the project.

:func:`epoch_ms` takes whatever a source hands over: a pyarrow array or chunked array of any type
pyarrow can give a timestamp column (``timestamp`` of every unit, with or without a zone;
``date32``/``date64``; integers, floats and decimals as epoch numbers (milliseconds unless an
``epoch_unit`` says otherwise: seconds, microseconds, nanoseconds, or ``auto`` from each value's
magnitude, see :data:`AUTO_BOUNDS`); ``string``,
``large_string``, ``string_view``; a dictionary of any of those; ``null``), or a Python sequence
of strings (a decoded JSON field). Text is ISO-8601 as :func:`iso_to_ms` reads it.

How text is read without a Python loop per value: rows of one length are laid out as a
``uint8[n, width]`` matrix (a view of Arrow's data buffer when every row has that length, a
gather otherwise) and checked and converted column by column against the layout of the group's
first row (digits, separators, ``Z``/``±HH:MM``, calendar checks by table lookup). A row that does
not fit its group's layout, or any spelling the matrix does not cover, goes to the per-value
reference (:func:`iso_to_ms`, i.e. ``datetime.fromisoformat``), which accepts it with the same
result or refuses it; tests compare both on fuzzed input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeAlias, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Timestamps outside [0001-01-01, 10000-01-01) UTC are bad: a datetime cannot hold them.
MIN_TIMESTAMP_MS = -62_135_596_800_000
MAX_TIMESTAMP_MS = 253_402_300_800_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_DAY_MS = 86_400_000
#: milliseconds per unit of a pyarrow timestamp, as (multiply, divide)
_UNIT = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}

#: What :func:`epoch_ms` reads.
Column: TypeAlias = pa.Array | pa.ChunkedArray | Sequence[str]

#: The unit of epoch numbers: declared, or ``auto``: decided per value from its magnitude.
EpochUnit: TypeAlias = Literal["auto", "s", "ms", "us", "ns"]
EPOCH_UNITS: tuple[str, ...] = get_args(EpochUnit)
#: ``auto`` reads |v| < 1e11 as seconds, < 1e14 as milliseconds, < 1e17 as microseconds, and
#: nanoseconds above. Each bound is year 5138 in the smaller unit and March 1973 in the larger, so
#: every time from 1973-03-03 to 5138 is read right whatever its unit; earlier epoch numbers need
#: a declared unit (``timestamp_unit`` of the detector).
AUTO_BOUNDS = np.array([10**11, 10**14, 10**17], dtype=np.int64)
_UNIT_NAMES = ("s", "ms", "us", "ns")
_INTEGER_TEXT = re.compile(r"[+-]?\d+", re.ASCII)
_NUMERIC_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


# ---------------------------------------------------------------------------------------------
# The reference: one value, plain Python


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
    """A decoded JSON timestamp (ISO string or epoch-ms number) → epoch ms, None if invalid."""
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


# ---------------------------------------------------------------------------------------------
# The vectorized parser


def epoch_ms(
    column: Column,
    *,
    text_epoch: bool = False,
    epoch_unit: EpochUnit = "ms",
    units_seen: set[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every value of ``column`` as epoch ms: ``(ms int64[n], ok bool[n])``, 0 where not ok.

    Args:
        column: see the module docstring for the types taken.
        text_epoch: also read numeric text (digits, an optional sign, decimals, an exponent) as an
            epoch number (history files, whose CSV columns are all text); JSON events keep numbers
            and text apart.
        epoch_unit: the unit of epoch numbers (integers, floats, decimals, numeric text); ``auto``
            decides per value from its magnitude (:data:`AUTO_BOUNDS`). Typed timestamps and dates
            carry their own unit.
        units_seen: when given, the units epoch numbers were read in are added to it (to say so).
    """
    if epoch_unit not in EPOCH_UNITS:
        raise ValueError(f"epoch_unit must be one of {', '.join(EPOCH_UNITS)}, not {epoch_unit!r}")
    if not isinstance(column, pa.Array | pa.ChunkedArray):
        fixed = _fixed_width_texts(column)
        if fixed is not None and not text_epoch:
            return fixed
        column = pa.array(column, pa.string())
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    seen = units_seen if units_seen is not None else set()
    ms, ok = _by_type(arr, text_epoch, epoch_unit, seen)
    if arr.null_count:
        ok &= pc.is_valid(arr).to_numpy(zero_copy_only=False)
    ok &= (ms >= MIN_TIMESTAMP_MS) & (ms < MAX_TIMESTAMP_MS)
    return np.where(ok, ms, 0), ok


def _by_type(
    arr: pa.Array, text_epoch: bool, unit: EpochUnit, seen: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    t = arr.type
    n = len(arr)
    if pa.types.is_dictionary(t):
        ms, ok = epoch_ms(arr.dictionary, text_epoch=text_epoch, epoch_unit=unit, units_seen=seen)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return ms[idx], ok[idx]
    if pa.types.is_timestamp(t) or pa.types.is_date64(t):
        mul, div = _UNIT[t.unit] if pa.types.is_timestamp(t) else (1, 1)
        raw = _ints(arr.cast(pa.int64()))
        if mul > 1:  # seconds: beyond the range, * 1000 would wrap around int64
            ok = (raw >= MIN_TIMESTAMP_MS // mul) & (raw < MAX_TIMESTAMP_MS // mul)
            return np.where(ok, raw, 0) * mul, ok
        return raw // div, np.ones(n, bool)
    if pa.types.is_date32(t):
        return _ints(arr.cast(pa.int32())).astype(np.int64) * _DAY_MS, np.ones(n, bool)
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t):  # beyond int64 is out of range anyway
            arr = pc.min_element_wise(arr, pa.scalar(2**62, pa.uint64()))
        return _scale_ints(_ints(arr.cast(pa.int64())), unit, seen, pc.is_valid(arr))
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        f = arr.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        return _scale_floats(f, unit, seen)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _texts(arr.cast(pa.string()) if not pa.types.is_string(t) else arr, text_epoch, unit, seen)
    return np.zeros(n, np.int64), np.zeros(n, bool)  # null, binary, nested: no timestamps


def _unit_index(magnitude: np.ndarray, unit: EpochUnit) -> np.ndarray:
    """int[n]: index into ``("s", "ms", "us", "ns")`` of each epoch number's unit."""
    if unit != "auto":
        return np.full(len(magnitude), _UNIT_NAMES.index(unit), dtype=np.int64)
    return np.searchsorted(AUTO_BOUNDS, magnitude, side="right").astype(np.int64)


def _scale_ints(
    v: np.ndarray, unit: EpochUnit, seen: set[str], valid: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch integers (int64[n]) in ``unit`` → (ms, ok); seconds beyond the range are not ok."""
    if unit == "ms":
        if len(v):
            seen.add("ms")
        return v, np.ones(len(v), bool)
    u = _unit_index(np.abs(np.maximum(v, -(2**62))), unit)
    if len(v):
        counted = u if valid is None else u[np.asarray(valid, dtype=bool)]
        seen.update(_UNIT_NAMES[i] for i in np.unique(counted).tolist())
    secs = u == 0
    ok = ~secs | ((v >= MIN_TIMESTAMP_MS // 1000) & (v < MAX_TIMESTAMP_MS // 1000))
    ms = np.where(secs, np.where(ok, v, 0) * 1000, v)
    ms = np.where(u == 2, v // 1000, np.where(u == 3, v // 1_000_000, ms))
    return ms, ok


def _scale_floats(f: np.ndarray, unit: EpochUnit, seen: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Epoch floats (float64[n], NaN = none) in ``unit`` → (ms floored, ok)."""
    finite = np.isfinite(f)
    u = _unit_index(np.abs(np.where(finite, f, 0.0)), unit)
    if finite.any():
        seen.update(_UNIT_NAMES[i] for i in np.unique(u[finite]).tolist())
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.where(finite, f, 0.0) * np.array([1000.0, 1.0, 1e-3, 1e-6])[u]
    ok = finite & (scaled >= MIN_TIMESTAMP_MS) & (scaled < MAX_TIMESTAMP_MS)
    # rounded to the microsecond first: 1700000000.123 s is 1700000000122.9999 ms in binary
    scaled = np.where(ok, scaled, 0.0)
    return np.floor(np.where(u == 1, scaled, np.round(scaled, 3))).astype(np.int64), ok


def _ints(arr: pa.Array) -> np.ndarray:
    out: np.ndarray = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return out


def _fixed_width_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Python strings all of the first one's length and ASCII: one join, then the matrix path.

    The common case of a decoded JSON field (one producer, one spelling); None otherwise. This is
    only a cheaper way than ``pa.array`` to get the bytes matrix.
    """
    n = len(texts)
    if n == 0 or type(texts[0]) is not str:
        return None
    width = len(texts[0])
    try:
        joined = "\x00".join(texts)
    except TypeError:  # not all strings
        return None
    if len(joined) != n * (width + 1) - 1 or not joined.isascii() or joined.count("\x00") != n - 1:
        return None
    mat = np.frombuffer((joined + "\x00").encode("ascii"), dtype=np.uint8).reshape(n, width + 1)
    ms, ok = _matrix(mat[:, :width])
    if not ok.all():
        for i in np.flatnonzero(~ok).tolist():
            v = iso_to_ms(texts[i])
            if v is not None:
                ms[i], ok[i] = v, True
    return ms, ok


def _texts(
    arr: pa.StringArray, text_epoch: bool, unit: EpochUnit = "ms", seen: set[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A string array: each length's rows through the matrix, what remains through the reference."""
    n = len(arr)
    ms = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    if n == 0:
        return ms, ok
    offsets = np.frombuffer(arr.buffers()[1], np.int32, n + 1, arr.offset * 4).astype(np.int64)
    data = (
        np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    )
    lengths = np.diff(offsets)
    for width in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == width)
        if width == 0:
            continue
        if len(rows) == n and offsets[-1] - offsets[0] == n * width:
            mat = data[offsets[0] : offsets[-1]].reshape(n, width)
        else:
            mat = data[offsets[rows][:, None] + np.arange(width)]
        if text_epoch and _all_digits(mat):
            ms[rows], ok[rows] = _scale_ints(_epoch_digits(mat)[0], unit, seen if seen is not None else set())
        else:
            ms[rows], ok[rows] = _matrix(mat)
    if not ok.all():
        _per_value(arr.to_pylist(), np.flatnonzero(~ok).tolist(), ms, ok, text_epoch, unit, seen)
    return ms, ok


def _per_value(
    texts: list[str | None],
    todo: list[int],
    ms: np.ndarray,
    ok: np.ndarray,
    text_epoch: bool,
    unit: EpochUnit,
    seen: set[str] | None,
) -> None:
    """The rows the matrix did not take (``todo``), one by one: ISO-8601 by the reference or, with
    ``text_epoch``, numeric text as an epoch number; fills ``ms`` and ``ok`` in place."""
    seen = seen if seen is not None else set()
    numbers: list[int] = []
    values: list[float] = []
    for i in todo:
        raw = texts[i]
        text = raw.strip() if raw is not None else ""
        if text_epoch and _NUMERIC_TEXT.fullmatch(text):
            numbers.append(i)
            values.append(_epoch_number(text))
            continue
        v = iso_to_ms(text) if text else None
        if v is not None:
            ms[i], ok[i] = v, True
    if not numbers:
        return
    ms[numbers], ok[numbers] = _scale_floats(np.array(values), unit, seen)
    ints = [i for i in numbers if _INTEGER_TEXT.fullmatch(str(texts[i]).strip())]
    if ints:  # integers (wide ones: beyond 2**53) exactly, not through a float
        exact = [int(str(texts[i]).strip()) for i in ints]
        fits = np.array([abs(x) < 2**63 for x in exact])
        ims, iok = _scale_ints(
            np.array([x if f else 0 for x, f in zip(exact, fits, strict=True)], np.int64), unit, set()
        )
        ms[ints], ok[ints] = ims, iok & fits


def _epoch_number(text: str) -> float:
    """Numeric text as a float (NaN when it does not fit one)."""
    try:
        return float(text)
    except (OverflowError, ValueError):
        return float("nan")


def _all_digits(mat: np.ndarray) -> bool:
    """Every row is digits, with an optional leading ``-`` (int64-safe widths only)."""
    if mat.shape[1] > 18:
        return False
    digit = (mat >= 48) & (mat <= 57)
    return bool(digit[:, 1:].all() and (digit[:, 0] | ((mat[:, 0] == 45) & (mat.shape[1] > 1))).all())


def _epoch_digits(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of digits (an optional leading ``-``) as integers: epoch milliseconds."""
    neg = mat[:, 0] == 45
    d = np.where(neg[:, None] & (np.arange(mat.shape[1]) == 0), 48, mat).astype(np.int64) - 48
    v = d @ (10 ** np.arange(mat.shape[1] - 1, -1, -1, dtype=np.int64))
    return np.where(neg, -v, v), np.ones(len(mat), bool)


# ISO-8601 of one layout as a uint8 matrix ----------------------------------------------------

_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_YEARS = np.arange(10_000, dtype=np.int64)
#: 1 where the year (0..9999) is a leap year
_LEAP = ((_YEARS % 4 == 0) & ((_YEARS % 100 != 0) | (_YEARS % 400 == 0))).astype(np.int64)


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


#: days from 1970-01-01 to January 1st of the year
_DAYS_BEFORE_YEAR = _days_from_civil(_YEARS, np.ones_like(_YEARS), np.ones_like(_YEARS))
#: [leap, month] → length of the month / days from January 1st to its first day (month 0 unused)
_MONTH_LEN = np.stack([_MONTH_DAYS, _MONTH_DAYS + (np.arange(13) == 2)])
_DAYS_BEFORE_MONTH = np.stack([np.concatenate([[0, 0], np.cumsum(row[1:12])]) for row in _MONTH_LEN])

_LAYOUT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)?", re.ASCII)
#: byte columns of the digits in ``YYYY-MM-DDTHH:MM:SS``
_DATE_DIGITS = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)


def _matrix(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ISO timestamps in a uint8[n, width] matrix, read in the layout of its first row."""
    n = mat.shape[0]
    try:
        first = mat[0].tobytes().decode("ascii")
    except UnicodeDecodeError:
        first = ""
    layout = _LAYOUT.fullmatch(first)
    if layout is None:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    nfrac = len(layout.group(1)) - 1 if layout.group(1) else 0
    zpos = 19 + (nfrac + 1 if nfrac else 0)
    zone = layout.group(2) or ""
    ok = _literals_ok(mat, first, nfrac, zpos, zone)
    dt = (mat - np.uint8(48)).T.astype(np.int64)  # one contiguous row per character position

    def num(*cols: int) -> np.ndarray:
        v: np.ndarray = dt[cols[0]]
        for c in cols[1:]:
            v = v * 10 + dt[c]
        return v

    year, month, day = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    hour, minute, second = num(11, 12), num(14, 15), num(17, 18)
    millis = num(*range(20, 20 + min(nfrac, 3))) * 10 ** (3 - min(nfrac, 3)) if nfrac else 0
    signed = bool(zone) and zone != "Z"
    off_h = num(zpos + 1, zpos + 2) if signed else 0
    off_m = num(zpos + 4, zpos + 5) if signed else 0
    # table lookups instead of the civil-date arithmetic: years 0..9999 (0 is invalid), months 0..12
    month_ok = (month >= 1) & (month <= 12)
    leap = _LEAP[np.clip(year, 0, 9999)]
    mcol = np.where(month_ok, month, 0)
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= _MONTH_LEN[leap, mcol])
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59) & (off_h <= 23) & (off_m <= 59)
    days = _DAYS_BEFORE_YEAR[np.clip(year, 0, 9999)] + _DAYS_BEFORE_MONTH[leap, mcol] + day - 1
    ms = days * _DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000 + millis
    if signed:
        ms -= np.where(mat[:, zpos] == 45, -1, 1) * (off_h * 60 + off_m) * 60_000
    return np.where(ok, ms, 0), ok


def _literals_ok(mat: np.ndarray, first: str, nfrac: int, zpos: int, zone: str) -> np.ndarray:
    """Rows whose digits and separators sit where the first row's layout has them."""
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
    ok = np.asarray(((mat[:, digit_cols] - np.uint8(48)) < 10).all(axis=1))  # wraps: non-digits >= 10
    if zone and zone != "Z":
        sign = mat[:, zpos]
        ok &= (sign == 43) | (sign == 45)  # '+' or '-', row by row
    lit_cols = np.array([c for c, _ in lit])
    ok &= (mat[:, lit_cols] == np.array([ord(ch) for _, ch in lit], dtype=np.uint8)).all(axis=1)
    return ok
