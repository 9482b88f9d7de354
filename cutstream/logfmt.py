"""Log output for operators: readable text on a terminal, one JSON object per line in containers.

The library logs ``message key=value ...`` (house style); :class:`JsonFormatter` keeps the message
and lifts every ``key=value`` pair into a field, so a log pipeline (Loki, CloudWatch, jq) can filter
on ``partition`` or ``topic`` without parsing text. Only the entry point configures logging:
``cutstream.cli`` calls :func:`setup_logging` with ``CUTSTREAM_LOG_FORMAT`` (``text`` or ``json``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_PAIR = re.compile(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_.]*)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;]+)")
#: Fields of the record itself; a key=value pair with one of these names is kept as ``kv_<name>``.
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc", "thread", "process"})


def message_fields(message: str) -> dict[str, Any]:
    """The ``key=value`` pairs of a log message; numbers become numbers, quotes are stripped."""
    fields: dict[str, Any] = {}
    for key, raw in _PAIR.findall(message):
        value: Any = raw
        if raw[:1] in ("'", '"') and raw[-1:] == raw[:1] and len(raw) >= 2:
            value = raw[1:-1]
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        fields[f"kv_{key}" if key in _RESERVED else key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC ISO-8601), level, logger, msg, the message's pairs, exc."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        out.update(message_fields(message))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            out["thread"] = record.threadName
            out["process"] = record.process
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: int, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once (entry points only): ``fmt`` is ``text`` or ``json``.

    Like ``logging.basicConfig``, it leaves a root logger that already has handlers alone (a test
    runner's capture, an embedding application's own setup).
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(
            f"unknown log format {fmt!r}: use one of {', '.join(LOG_FORMATS)} (CUTSTREAM_LOG_FORMAT)"
        )
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
