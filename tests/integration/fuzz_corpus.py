"""Hostile events for the worker fuzz test and soak: a hand-made corpus and a seeded mutator.

Every corpus entry names the dead-letter reason it must get (None: it is processed). Timestamps
sit an hour behind the wall clock of the run, so the live future guard sees them as current.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_MS = 1_000
DAY_MS = 86_400_000
#: The reasons a dead letter may carry (parser, windows).
KNOWN_REASONS = {
    "empty",
    "invalid_json",
    "not_an_object",
    "missing_timestamp",
    "bad_timestamp",
    "missing_dimension",
    "bad_dimension",
    "dimension_too_long",
    "missing_measure",
    "late",
    "future_timestamp",
    "cardinality_limit",
}


def known_reason(reason: str) -> bool:
    return reason in KNOWN_REASONS or reason.split(":", 1)[0] in {"bad_measure", "non_finite", "out_of_range"}


@dataclass(frozen=True)
class Hostile:
    """One message to produce and what must become of it."""

    value: bytes | None
    reason: str | None  # the dead-letter reason, None when it is processed
    key: bytes | None = b"k"
    headers: tuple[tuple[str, bytes], ...] = ()


def _ev(ts: object, host: object = "h", value: object = 1.0) -> bytes:
    return json.dumps({"ts": ts, "host": host, "value": value}, ensure_ascii=False).encode()


def corpus(base_ms: int) -> list[Hostile]:
    """Valid events of one series every 100 ms from ``base_ms`` with the hostile ones among them;
    a far-past event at the end (late)."""

    def ok(**kw: object) -> Callable[[int], Hostile]:
        return lambda t: Hostile(_ev(t, **kw), None)

    hostile: list[Callable[[int], Hostile]] = [
        # malformed Unicode
        lambda t: Hostile(b'{"ts": %d, "host": "\\ud800", "value": 1}' % t, "bad_dimension"),
        lambda t: Hostile(b'{"ts": %d, "host": "a\\udfffb", "value": 1}' % t, "bad_dimension"),
        lambda t: Hostile(b'{"ts": %d, "host": "\xff\xfe\xc0\xaf", "value": 1}' % t, "invalid_json"),
        lambda t: Hostile(b'{"ts": "\\ud800", "host": "h", "value": 1}', "bad_timestamp"),
        lambda t: Hostile(b"\xef\xbb\xbf" + _ev(t), "invalid_json"),  # a byte-order mark
        ok(host="a\x00b\x1f\u2028c\n"),  # control characters and separators are fine
        ok(host="\U0001f600" * 256),  # 1024 bytes of UTF-8 exactly
        # huge strings and numbers
        lambda t: Hostile(_ev(t, host="x" * 1025), "dimension_too_long"),
        lambda t: Hostile(_ev(t, host="é" * 450_000), "dimension_too_long"),  # 900 KB: its dead letter is cut
        lambda t: Hostile(_ev(t, value=1e301), "out_of_range:value"),
        lambda t: Hostile(b'{"ts": %d, "host": "h", "value": 1e400}' % t, "non_finite:value"),
        lambda t: Hostile(b'{"ts": %d, "host": "h", "value": -%s}' % (t, b"9" * 400), "non_finite:value"),
        lambda t: Hostile(b'{"ts": %d, "host": "h", "value": %s}' % (t, b"9" * 5000), "invalid_json"),
        lambda t: Hostile(b'{"ts": %d, "host": "h", "value": NaN}' % t, "invalid_json"),
        lambda t: Hostile(b'{"ts": %d, "host": %s, "value": 1}' % (t, b"9" * 5000), "invalid_json"),
        ok(host=10**30),
        ok(host=-0.0),
        ok(value=1e300),
        ok(value=5e-324),
        # deep nesting
        lambda t: Hostile(
            b'{"ts": %d, "host": "h", "value": 1, "x": %s%s}' % (t, b"[" * 200_000, b"]" * 200_000),
            "invalid_json",
        ),
        lambda t: Hostile(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "invalid_json"),
        lambda t: Hostile(
            b'{"ts": %d, "host": %s1%s, "value": 1}' % (t, b"[" * 5000, b"]" * 5000), "invalid_json"
        ),
        lambda t: Hostile(b"[" * 800_000, "invalid_json"),
        # extreme timestamps
        lambda t: Hostile(_ev("9999-12-31T23:59:59.999Z"), "bad_timestamp"),
        lambda t: Hostile(_ev(253_402_300_799_999), "bad_timestamp"),
        lambda t: Hostile(_ev(10**300), "bad_timestamp"),
        lambda t: Hostile(_ev(-(10**20)), "bad_timestamp"),
        lambda t: Hostile(_ev("+275760-09-13T00:00:00Z"), "bad_timestamp"),
        lambda t: Hostile(_ev(base_ms + 365 * DAY_MS), "future_timestamp"),
        lambda t: Hostile(_ev(base_ms + 2 * DAY_MS), "future_timestamp"),
        lambda t: Hostile(_ev(t + 0.5), None),  # epoch ms as a float...
        lambda t: Hostile(
            b'{"ts": %s, "host": "h", "value": 1}' % (b"9" * 400), "bad_timestamp"
        ),  # ...then beyond any float
        lambda t: Hostile(_ev(True), "bad_timestamp"),
        lambda t: Hostile(_ev(None), "missing_timestamp"),
        # non-object JSON
        *(
            (lambda t, v=v: Hostile(v, "not_an_object"))
            for v in (b"[]", b'"text"', b"12", b"null", b"true", b"[{}]")
        ),
        # binary garbage, empty messages, tombstones
        lambda t: Hostile(bytes(range(256)) * 4, "invalid_json"),
        lambda t: Hostile(b"\x00" * 64, "invalid_json"),
        lambda t: Hostile(b"", "empty"),
        lambda t: Hostile(b" \n\t ", "empty"),
        lambda t: Hostile(None, "empty"),
        # oversized keys and headers: nothing of them reaches a record
        lambda t: Hostile(_ev(t), None, key=b"K" * 600_000),
        lambda t: Hostile(b"garbage", "invalid_json", key=b"K" * 600_000),
        lambda t: Hostile(_ev(t), None, headers=tuple((f"h{i}", b"v" * 1000) for i in range(100))),
        lambda t: Hostile(_ev(t), None, key=None),
        # wrong types
        lambda t: Hostile(_ev(t, host={"a": 1}), "bad_dimension"),
        lambda t: Hostile(_ev(t, host=None), "missing_dimension"),
        lambda t: Hostile(_ev(t, value="7"), "bad_measure:value"),
        lambda t: Hostile(b'{"ts": %d, "host": "h"}' % t, "missing_measure"),
    ]
    makers: list[Callable[[int], Hostile]] = []
    for h in hostile:  # a valid event between every two hostile ones
        makers += [ok(), h]
    makers += [ok() for _ in range(20)]
    makers.append(lambda t: Hostile(_ev(base_ms - 30 * DAY_MS), "late"))  # far in the past
    makers.append(lambda t: Hostile(_ev(-62_135_596_800_000), "late"))  # 0001-01-01
    makers += [ok() for _ in range(20)]
    return [make(base_ms + 100 * i) for i, make in enumerate(makers)]


def mutator(seed: int, base_ms: int) -> Callable[[], bytes | None]:
    """A seeded generator of hostile messages: corpus entries flipped, cut, spliced and re-typed."""
    rng = random.Random(seed)
    tick = itertools.count()
    seeds = [h.value for h in corpus(base_ms) if h.value is not None and len(h.value) < 5000]
    scalars: list[object] = [
        None,
        True,
        0,
        -1,
        2**63,
        10**30,
        1e308,
        -1e300,
        1.5,
        "",
        "\ud800",
        "x" * 2000,
        [],
        {},
        [[[]]],
        "2024-01-01",
        "9999-12-31T23:59:59Z",
        base_ms,
        base_ms + 10 * DAY_MS,
        base_ms - 10 * DAY_MS,
    ]

    def one() -> bytes | None:
        kind = rng.randrange(8)
        if kind == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        if kind == 1:  # an event with a random field replaced
            # event time moves on (10 ms a message) with some disorder, so most of these are taken
            ts = base_ms + 10 * next(tick) - rng.choice([0, 0, 0, 0, 50, 2_000])
            obj: dict[str, object] = {"ts": ts, "host": rng.choice(["m", "n", 7]), "value": 1.0}
            obj[rng.choice(["ts", "host", "value", "extra"])] = rng.choice(scalars)
            return json.dumps(obj).encode("utf-8", "surrogatepass")
        s = bytearray(rng.choice(seeds))
        if kind == 2 and s:  # flip bytes
            for _ in range(rng.randrange(1, 4)):
                s[rng.randrange(len(s))] = rng.randrange(256)
        elif kind == 3:  # cut
            s = s[: rng.randrange(len(s) + 1)]
        elif kind == 4:  # splice two
            other = rng.choice(seeds)
            s = s[: rng.randrange(len(s) + 1)] + other[rng.randrange(len(other) + 1) :]
        elif kind == 5:  # nest
            depth = rng.choice([10, 1000, 100_000])
            s = b"[" * depth + bytes(s) + b"]" * depth
        elif kind == 6:
            return None
        return bytes(s)

    return one
