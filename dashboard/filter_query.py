"""The anomaly table's filter row: DataTable's ``filter_query`` text → :class:`sinks.query.Filter`s.

The syntax is what DataTable writes for ``filter_action="custom"``: terms ``{column} operator value``
joined by `` && ``; a value is bare (up to the next `` && `` or the end) or quoted with ``"``, ``'``
or a backtick (backslash escapes; a quoted value may hold `` && ``).

The text comes from the browser, so the parser is a single left-to-right scan: every step is an
anchored match whose quantifiers are possessive (``*+``, no backtracking) or a ``str.find``, and
each starts where the previous one ended. The regex engine's work per step is therefore the length
of what it consumed plus the one character that stopped it, and the whole parse is linear in the
text; :class:`ScanStats` adds those counts up so that a test can check the bound by counting work
instead of timing it. (The regular expression this replaced, ``.+?`` before ``\\s*$``, was
quadratic in a run of spaces: 45 s for a 100 KB filter.) Texts longer than :data:`MAX_FILTER_CHARS`
are refused with a message before any scanning.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sinks.query as q

#: The longest filter text read. A filter typed into the table's filter row is a few dozen
#: characters per column; a longer text is a paste gone wrong or a hostile request.
MAX_FILTER_CHARS = 4096

#: Operators as DataTable writes them (``i``/``s`` = case-insensitive/-sensitive variants) → ours.
_OPS = {
    "=": "=",
    "eq": "=",
    "!=": "!=",
    "ne": "!=",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "le": "<=",
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "ge": ">=",
    "contains": "contains",
    "datestartswith": "datestartswith",
}

# Every pattern below either matches possessively or fails within a bounded number of characters.
_SPACE = re.compile(r"\s*+")
_OPERATOR = r"[is]?+(?:(?:eq|ne|lt|le|gt|ge|contains|datestartswith)(?!\w)|!=|<=|>=|=|<|>)"
#: A term's head, ``{column} operator ``; every part optional and possessive, checked in this order.
_HEAD = re.compile(
    rf"\{{(?P<column>[^{{}}]*+)(?P<close>\}}?+)(?P<space1>\s*+)(?P<op>{_OPERATOR})?+(?P<space2>\s*+)"
)
_HEAD_PARTS = (
    ("column", "a column name"),
    ("close", "'}' after the column name"),
    ("space1", "a space after the column"),
    ("op", "an operator (=, !=, <, <=, >, >=, contains, datestartswith)"),
    ("space2", "a space after the operator"),
)
_QUOTED = re.compile(r"""(?:"(?:[^"\\]++|\\.)*+|'(?:[^'\\]++|\\.)*+|`(?:[^`\\]++|\\.)*+)""", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)
_SEPARATOR = " && "
_QUOTES = ('"', "'", "`")
_SNIPPET = 40


@dataclass
class ScanStats:
    """The work a parse did: ``steps`` scanner calls, ``chars`` characters examined by them."""

    steps: int = 0
    chars: int = 0


class _Scanner:
    """A cursor over the text; each read starts at ``pos`` and moves it past what it consumed."""

    def __init__(self, text: str, stats: ScanStats) -> None:
        self.text = text
        self.pos = 0
        self.stats = stats

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def take(self, pattern: re.Pattern[str]) -> str | None:
        """The match of ``pattern`` at the cursor (None: no match; the cursor stays)."""
        self.stats.steps += 1
        m = pattern.match(self.text, self.pos)
        if m is None:
            self.stats.chars += 16  # a failing pattern here gives up within a few characters
            return None
        self.stats.chars += m.end() - self.pos + 1
        self.pos = m.end()
        return m.group()

    def take_match(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The match of ``pattern`` (one that matches at the cursor whatever follows)."""
        self.stats.steps += 1
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise self.error("a filter term")
        self.stats.chars += m.end() - self.pos + 1
        self.pos = m.end()
        return m

    def take_char(self, char: str) -> bool:
        self.stats.steps += 1
        self.stats.chars += len(char)
        if self.text.startswith(char, self.pos):
            self.pos += len(char)
            return True
        return False

    def take_until(self, separator: str) -> str:
        """Everything up to the next ``separator`` (or the end); the cursor stops at the separator."""
        self.stats.steps += 1
        end = self.text.find(separator, self.pos)
        end = len(self.text) if end < 0 else end
        self.stats.chars += end - self.pos + len(separator)
        out = self.text[self.pos : end]
        self.pos = end
        return out

    def error(self, expected: str) -> q.QueryInputError:
        rest = self.text[self.pos : self.pos + _SNIPPET]
        found = "the end" if not rest else repr(rest + ("…" if len(self.text) > self.pos + _SNIPPET else ""))
        return q.QueryInputError(
            f"cannot read the filter at character {self.pos + 1}: expected {expected}, found {found}"
        )


def parse_filter_query(
    text: str | None, max_chars: int = MAX_FILTER_CHARS, stats: ScanStats | None = None
) -> list[q.Filter]:
    """DataTable's ``filter_query`` (``{col} op value && ...``) → query filters, in one linear scan.

    Args:
        text: the filter text (None or blank: no filters).
        max_chars: longer texts are refused before any scanning.
        stats: when given, receives the work done (for the linearity test and the benchmark).

    Raises:
        sinks.query.QueryInputError: a text over ``max_chars``, a term that is not ``{column}
            operator value``, an operator this table does not support, or a bad date; the message
            says which and where.
    """
    if not text:
        return []
    if len(text) > max_chars:
        raise q.QueryInputError(
            f"the filter is {len(text):,} characters long; the table reads at most {max_chars:,}"
        )
    scan = _Scanner(text, stats if stats is not None else ScanStats())
    out: list[q.Filter] = []
    scan.take(_SPACE)
    more = not scan.at_end()
    while more:
        column, op, value, more = _term(scan)
        if op == "datestartswith":
            out.extend(_date_prefix(column, value))
        else:
            out.append(q.Filter(column, op, value))
    return out


def _term(scan: _Scanner) -> tuple[str, str, str, bool]:
    """One ``{column} operator value`` and the `` && `` after it (the last item: was there one)."""
    if scan.peek() != "{":
        raise scan.error("'{column}'")
    head = scan.take_match(_HEAD)  # always matches at a '{'; its groups say what is missing
    part_end = head.start() + 1
    for group, expected in _HEAD_PARTS:
        if not head.group(group):
            scan.pos = part_end
            raise scan.error(expected)
        part_end = head.end(group)
    word = head.group("op")
    column = head.group("column")
    op = _OPS[word[1:] if word[0] in "is" and word[1:] in _OPS else word]
    value, more = _quoted_value(scan) if scan.peek() in _QUOTES else _bare_value(scan, word)
    scan.take(_SPACE)
    return column, op, value, more


def _quoted_value(scan: _Scanner) -> tuple[str, bool]:
    """A quoted value (escapes removed) and whether `` && `` follows it."""
    quote = scan.peek()
    raw = scan.take(_QUOTED) or quote
    if not scan.take_char(quote):
        raise scan.error(f"the closing {quote}")
    value = _ESCAPE.sub(r"\1", raw[1:])
    scan.take(_SPACE)
    if scan.at_end():
        return value, False
    if not (scan.take_char("&&") and scan.take(_SPACE)):
        raise scan.error("' && ' or the end after the quoted value")
    return value, True


def _bare_value(scan: _Scanner, operator: str) -> tuple[str, bool]:
    """A value up to the next `` && `` (trailing spaces dropped) and whether one follows."""
    value = scan.take_until(_SEPARATOR).rstrip()
    if not value:
        raise scan.error(f"a value after {operator!r}")
    if scan.at_end():
        return value, False
    scan.take_char(_SEPARATOR)
    return value, True


def _date_prefix(col: str, text: str) -> list[q.Filter]:
    """``datestartswith 2026-01-05`` → ``col >= 2026-01-05 AND col < 2026-01-06`` (also YYYY-MM, YYYY)."""
    t = text.strip()
    try:
        if re.fullmatch(r"\d{4}", t):
            lo = dt.datetime(int(t), 1, 1, tzinfo=dt.UTC)
            hi = dt.datetime(int(t) + 1, 1, 1, tzinfo=dt.UTC)
        elif re.fullmatch(r"\d{4}-\d{2}", t):
            y, m = int(t[:4]), int(t[5:7])
            lo = dt.datetime(y, m, 1, tzinfo=dt.UTC)
            hi = dt.datetime(y + m // 12, m % 12 + 1, 1, tzinfo=dt.UTC)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            lo = dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC)
            hi = lo + dt.timedelta(days=1)
        else:
            return [q.Filter(col, ">=", t)]
    except ValueError:
        raise q.QueryInputError(f"{col!r}: {text!r} is not a date") from None
    return [q.Filter(col, ">=", lo), q.Filter(col, "<", hi)]
