"""Progress bars for the long commands (backfill, compact, evaluate): tqdm on stderr.

A bar draws only when stderr is a terminal (tqdm's ``disable=None``) and never with ``--no-progress``,
so logs, pipes and CI stay clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def rows_progress(path: Path, enabled: bool, desc: str) -> Iterator[Callable[[int], None]]:
    """A bar of the history rows under ``path`` read so far (rate, ETA); yields ``to(rows_read)``."""
    from tqdm import tqdm

    from streams.history import count_rows, history_files

    total = count_rows(history_files(path)) if enabled else None
    bar = tqdm(
        total=total,
        unit="rows",
        unit_scale=True,
        desc=desc,
        dynamic_ncols=True,
        disable=None if enabled else True,
    )

    def to(rows: int) -> None:
        # the step that closes the last windows counts one row past the end
        bar.update((rows if total is None else min(rows, total)) - bar.n)

    try:
        yield to
        if total is not None:
            to(total)  # done: the rows after the last step that closed windows were read too
    finally:
        bar.close()


@contextmanager
def count_progress(enabled: bool, desc: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A bar of items done out of a total learnt on the way; yields ``to(done, total)``."""
    from tqdm import tqdm

    bar = tqdm(unit=unit, desc=desc, dynamic_ncols=True, disable=None if enabled else True)

    def to(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    try:
        yield to
    finally:
        bar.close()
