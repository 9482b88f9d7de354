"""Checks on what reaches the callbacks: a request the page cannot have sent is answered 400, not 500.

Two layers. :func:`check_callback_request` looks at the body of ``POST /_dash-update-component``
before Dash does: a JSON object naming a server-side callback of this page, with its outputs,
inputs and state in the registered order. Then each callback passes its values through the
converters below (type, shape, length), which raise :class:`InputError`; the app turns that into a
one-line ``400``. What a user can type (a filter, a type-ahead search, an alert link) is never an
InputError: it gets a message on the page or is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Request bodies larger than this are refused (413) before they are read. The largest legitimate
#: body is the anomaly table's refresh, which sends the table's rows back (500 rows, ~150 KB).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Longest text accepted in a picker value, a store or a URL query.
MAX_TEXT = 10_000

_SERIES_ID = re.compile(r"[0-9a-fA-F]{1,64}")


class InputError(ValueError):
    """A callback request or value that the page cannot have sent (answered 400)."""


def check_callback_request(body: Any, callbacks: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`InputError` unless ``body`` is a well-formed request for a server callback.

    Args:
        body: the decoded JSON body.
        callbacks: ``Dash.callback_map`` (output key → ``inputs``, ``state``, ``output``,
            ``callback``; clientside callbacks have no ``callback``).
    """
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    output = body.get("output")
    if not isinstance(output, str):
        raise InputError("'output' must be a string")
    spec = callbacks.get(output)
    if spec is None or "callback" not in spec:
        raise InputError(f"no server callback for output {output[:100]!r}")
    _check_outputs(body.get("outputs"), spec["output"])
    for key in ("inputs", "state"):
        _check_props(key, body.get(key, [] if key == "state" else None), spec.get(key) or [])
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise InputError("'changedPropIds' must be a list of strings")


def _check_props(key: str, got: Any, want: list[dict[str, Any]]) -> None:
    if not isinstance(got, list) or len(got) != len(want):
        raise InputError(f"{key!r} must be a list of {len(want)} properties")
    for item, expected in zip(got, want, strict=True):
        if (
            not isinstance(item, dict)
            or item.get("id") != expected["id"]
            or item.get("property") != expected["property"]
        ):
            raise InputError(f"{key!r} must name {expected['id']}.{expected['property']} in order")


def _check_outputs(got: Any, spec: Any) -> None:
    want = spec if isinstance(spec, list) else [spec]
    items = got if isinstance(got, list) else [got]
    if len(items) != len(want):
        raise InputError(f"'outputs' must be {len(want)} properties")
    for item, output in zip(items, want, strict=True):
        if (
            not isinstance(item, dict)
            or item.get("id") != output.component_id
            or str(item.get("property", "")).split("@")[0] != output.component_property.split("@")[0]
        ):
            raise InputError(f"'outputs' must name {output.component_id}.{output.component_property}")


# ---------------------------------------------------------------------------------------------------
# Converters: one per kind of value the page sends


def text(value: Any, name: str, max_chars: int = MAX_TEXT) -> str | None:
    """A string or None (a picker's value, a search text, a URL's query)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > max_chars:
        raise InputError(f"{name} is longer than {max_chars:,} characters")
    return value


def count(value: Any, name: str) -> int | None:
    """A counter such as ``n_intervals``: a non-negative integer or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a non-negative integer")
    return value


def period(value: Any) -> str | None:
    """The period picker's value (an unknown name means the default period)."""
    return text(value, "period", 20)


def series_id(value: Any) -> str | None:
    """A series picker value: a hex ``timeseriesId`` or nothing."""
    sid = text(value, "series", 64)
    if not sid:
        return None
    if not _SERIES_ID.fullmatch(sid):
        raise InputError("series must be a hexadecimal series id")
    return sid


def record(value: Any, name: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """A small object (a store, a table's active cell): a dict whose ``keys`` hold text, or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(f"{name} must be an object, not {type(value).__name__}")
    for key in keys:
        item = value.get(key)
        if item is not None and not isinstance(item, str):
            raise InputError(f"{name}.{key} must be a string")
        if isinstance(item, str) and len(item) > MAX_TEXT:
            raise InputError(f"{name}.{key} is longer than {MAX_TEXT:,} characters")
    return value


def sort_by(value: Any) -> list[dict[str, str]] | None:
    """DataTable's ``sort_by``: a list of ``{column_id, direction}``."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 50:
        raise InputError("sort_by must be a list of at most 50 sort keys")
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("column_id"), str)
            or item.get("direction", "asc") not in ("asc", "desc")
        ):
            raise InputError("sort_by entries must be {column_id: text, direction: asc|desc}")
    return value


def rows(value: Any, name: str) -> list[dict[str, Any]] | None:
    """A table's ``data`` sent back as state: a list of objects, or None."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise InputError(f"{name} must be a list of rows")
    return value
