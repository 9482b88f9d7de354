"""The versions of the stream side's saved state, in one table, with one mapper per old version.

As in random-cut-forest-by-aws (``state/Version.java`` and a mapper per part): every part that
streams/ writes to disk carries a ``version``; this table says which version each part writes
now and which it can read. Reading an old version goes through that part's mappers, one version
step each, up to the current one; only the current version is ever written. Each old version has
a golden file under ``tests/golden/`` that must keep loading.

The detector's own state (``Detector.to_state``: forest and normalizer) carries its own versions
in detector/; a checkpoint holds it as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from detector.state import Part
from streams.errors import StreamsError

State = dict[str, Any]


class StateVersionError(StreamsError):
    """A saved state of a version this code cannot read."""


def part(name: str, current: int, mappers: Mapping[int, Callable[[State], State]] | None = None) -> Part:
    """A stream-side part: detector/state.py's ``Part`` (the version written now, one mapper per
    older version), raising this package's error."""
    return Part(name, current, mappers or {}, error=StateVersionError, hint="")


def _checkpoint_v2_to_v3(header: State) -> State:
    """Layout 2 carried the Parquet sink's idle rows as ``pending_results``; 3 keys them by sink."""
    header = dict(header)
    pending = header.pop("pending_results", None)
    header["sinks"] = {"parquet": pending} if pending is not None else {}
    header["version"] = 3
    return header


#: The checkpoint file's header (streams/checkpoint.py); the states inside carry their own versions.
CHECKPOINT_FILE = part("checkpoint file layout", 3, {2: _checkpoint_v2_to_v3})
#: A partition's windows (``WindowState.to_state``).
WINDOW_STATE = part("window state", 1)
#: A replay's position file (streams/replay.py).
REPLAY_POSITION = part("replay position file", 1)

#: Every part streams/ saves, for the docs and the tests.
PARTS: tuple[Part, ...] = (CHECKPOINT_FILE, WINDOW_STATE, REPLAY_POSITION)
