"""Writing files under the data directory, with failures an operator can act on.

A full disk, a read-only file system or a refused permission while writing results, checkpoints
or model files becomes one :class:`~sinks.errors.StorageError` whose message names the path and
says what to do, and the temporary file of the write is removed: nothing half-written stays.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from sinks.errors import StorageError


def _advice(code: int | None, where: Path) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (
            "no space left on the device (or the disk quota is used up); free space there, "
            "or point cutstream at a directory on a disk with room"
        )
    if code == errno.EROFS:
        return "the file system is read-only; mount it read-write, or point cutstream at a writable directory"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied; let the user running cutstream (uid {os.geteuid()}) write to "
            f"{where}, or point cutstream at a directory it may write to"
        )
    return os.strerror(code) if code else "the write failed"


def storage_error(exc: OSError, path: Path, what: str) -> StorageError:
    """``exc`` (raised while writing ``what`` to ``path``) as one line: which path, what to do."""
    failed = Path(exc.filename) if isinstance(exc.filename, str | Path) else Path(path)
    return StorageError(f"cannot write the {what} {failed}: {_advice(exc.errno, failed.parent)}")


@contextlib.contextmanager
def writing(path: Path, what: str, *temps: Path) -> Iterator[None]:
    """Around the writing of ``what`` to ``path``: an ``OSError`` becomes a :class:`StorageError`,
    and on any failure the temporary files ``temps`` are removed."""
    try:
        yield
    except BaseException as exc:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise storage_error(exc, path, what) from exc
        raise
