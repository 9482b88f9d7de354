"""Durations as people write them: ``7d``, ``12h``, ``30m``, ``90s``, ``250ms``, ``1d12h`` or plain ms."""

from __future__ import annotations

import re

_DURATION_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration_ms(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``90s``, ``250ms``, ``1d12h`` or a plain number of ms → ms.

    Raises:
        ValueError: the text is not such a duration.
    """
    s = str(text).strip().lower()
    if s.isdigit():
        return int(s)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS_MS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(s):
        raise ValueError(f"{text!r} is not a duration (e.g. 7d, 12h, 30m, 90s, 250ms, or ms as a number)")
    return round(total)
