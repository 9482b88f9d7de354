"""Stage clocks for the benches: wrap a function so that its calls add their seconds to a tally."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any


def timed(
    spent: dict[str, float], name: str, f: Callable[..., Any], first: str | None = None
) -> Callable[..., Any]:
    """``f``, whose calls add their wall time to ``spent[name]``; with ``first``, the first call's
    goes to ``spent[first]`` instead (a step whose first call also loads or compiles what the later
    ones use)."""
    calls = [0]

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        stage = first if first is not None and calls[0] == 0 else name
        calls[0] += 1
        t = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - t

    return run


def timed_iter(
    spent: dict[str, float], name: str, f: Callable[..., Iterator[Any]]
) -> Callable[..., Iterator[Any]]:
    """``f`` (a generator function), whose items add the time each took to make to ``spent[name]``."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Iterator[Any]:
        items = f(*args, **kwargs)
        while True:
            t = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            yield item

    return run
