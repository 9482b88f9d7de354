"""Stage clocks for the benches: wrap a function so that its calls add their seconds to a tally."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any


def timed(spent: dict[str, float], name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """``f``, whose calls add their wall time to ``spent[name]``."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t

    return run


def timed_first(spent: dict[str, float], first: str, rest: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """``f``, whose first call adds its wall time to ``spent[first]`` and later ones to ``spent[rest]``
    (a step whose first call also loads or compiles what the later ones use)."""
    calls = [0]

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        name = first if calls[0] == 0 else rest
        calls[0] += 1
        t = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t

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
