"""Per-partition checkpoints: detector state, open windows and the next offset, written atomically.

A checkpoint file lives at ``<data_dir>/checkpoints/<group>/<topic>/<partition>.ckpt`` and holds
everything the worker needs to resume a partition exactly where the checkpoint was taken: the
next offset to consume, the window state, the detector state of the partition's series and the
results that were produced but could not be written to Parquet yet (see docs/ARCHITECTURE.md,
"Stream processing").

The file format is self-describing and never unpickles anything: a magic line, a JSON header
(the nested state with every numpy array replaced by a reference) and the arrays in an ``.npz``
blob read with ``allow_pickle=False``. Writes go to a temporary name, are fsynced and renamed,
and the directory is fsynced, so a crash leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streams.errors import StreamsError

logger = logging.getLogger(__name__)

MAGIC = b"CUTSTREAM-CKPT\n"
#: Version of the file layout (not of the states inside, which carry their own versions).
VERSION = 1


class CheckpointError(StreamsError):
    """A checkpoint file is unreadable, of an unknown version or for another partition."""


@dataclass
class Checkpoint:
    """What a partition's worker needs to resume.

    Attributes:
        topic, partition: the input partition.
        next_offset: the first offset not yet reflected in the state (where to seek on restore).
        windows: per detector name, the window state (``WindowState.to_state()``).
        detectors: per detector name, the detector state of the partition's series.
        series: per detector name, the timeseriesIds whose models live in this partition.
        pending_results: Arrow IPC stream of results produced but not yet in Parquet (windows
            closed by the idle timeout after the last input offset), or ``b""``.
        written_at_ms: wall-clock time of the write (for operators; never used for decisions).
    """

    topic: str
    partition: int
    next_offset: int
    windows: dict[str, Any] = field(default_factory=dict)
    detectors: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)
    pending_results: bytes = b""
    written_at_ms: int = 0


def _encode(obj: Any, arrays: list[np.ndarray]) -> Any:
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | float):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {"__list__": [_encode(v, arrays) for v in obj.tolist()]}
        arrays.append(obj)
        return {"__nd__": len(arrays) - 1}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), arrays)
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            if any(k.startswith("__") and k.endswith("__") for k in obj):
                return {"__dict__": [[k, _encode(v, arrays)] for k, v in obj.items()]}
            return {k: _encode(v, arrays) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    raise CheckpointError(f"cannot checkpoint a value of type {type(obj).__name__}")


def _decode(obj: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, payload),) = obj.items()
        if tag == "__nd__":
            return arrays[f"a{payload}"]
        if tag == "__bytes__":
            return base64.b64decode(payload)
        if tag == "__tuple__":
            return tuple(_decode(v, arrays) for v in payload)
        if tag == "__list__":
            return np.array([_decode(v, arrays) for v in payload], dtype=object)
        if tag == "__dict__":
            return {_decode_key(k, arrays): _decode(v, arrays) for k, v in payload}
    return {k: _decode(v, arrays) for k, v in obj.items()}


def _decode_key(k: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    value = _decode(k, arrays)
    return value if not isinstance(value, list) else tuple(value)


def dumps(ckpt: Checkpoint) -> bytes:
    """Serialize a checkpoint (see the module docstring for the layout)."""
    arrays: list[np.ndarray] = []
    header = {
        "version": VERSION,
        "topic": ckpt.topic,
        "partition": ckpt.partition,
        "next_offset": ckpt.next_offset,
        "written_at_ms": ckpt.written_at_ms,
        "series": ckpt.series,
        "windows": _encode(ckpt.windows, arrays),
        "detectors": _encode(ckpt.detectors, arrays),
        "pending_results": _encode(ckpt.pending_results, arrays),
    }
    head = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    blob = io.BytesIO()
    np.savez(blob, **{f"a{i}": a for i, a in enumerate(arrays)})
    body = blob.getvalue()
    crc = zlib.crc32(head + body)
    return MAGIC + f"{len(head)} {len(body)} {crc}\n".encode() + head + body


def loads(data: bytes) -> Checkpoint:
    """Parse :func:`dumps` output; raise :class:`CheckpointError` on anything unexpected."""
    if not data.startswith(MAGIC):
        raise CheckpointError("not a cutstream checkpoint (bad magic)")
    rest = data[len(MAGIC) :]
    line, _, rest = rest.partition(b"\n")
    try:
        n_head, n_body, crc = (int(x) for x in line.split())
    except ValueError as exc:
        raise CheckpointError("corrupt checkpoint header line") from exc
    head, body = rest[:n_head], rest[n_head : n_head + n_body]
    if len(head) != n_head or len(body) != n_body or zlib.crc32(head + body) != crc:
        raise CheckpointError("checkpoint is truncated or corrupt (length or CRC mismatch)")
    header = json.loads(head)
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint version {header.get('version')} is not supported (expected {VERSION})"
        )
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return Checkpoint(
        topic=header["topic"],
        partition=int(header["partition"]),
        next_offset=int(header["next_offset"]),
        written_at_ms=int(header.get("written_at_ms", 0)),
        series={k: list(v) for k, v in header["series"].items()},
        windows=_decode(header["windows"], arrays),
        detectors=_decode(header["detectors"], arrays),
        pending_results=_decode(header["pending_results"], arrays),
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """Checkpoint files of one consumer group: ``<data_dir>/checkpoints/<group>/<topic>/<p>.ckpt``."""

    def __init__(self, data_dir: Path, group_id: str) -> None:
        self.root = Path(data_dir) / "checkpoints" / group_id

    def path(self, topic: str, partition: int) -> Path:
        return self.root / topic / f"{partition}.ckpt"

    def save(self, ckpt: Checkpoint) -> Path:
        """Write atomically: temp file, fsync, rename, fsync the directory."""
        final = self.path(ckpt.topic, ckpt.partition)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        data = dumps(ckpt)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        logger.debug(
            "checkpoint saved topic=%s partition=%d next_offset=%d bytes=%d",
            ckpt.topic,
            ckpt.partition,
            ckpt.next_offset,
            len(data),
        )
        return final

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        """The partition's checkpoint, or None when it has none."""
        path = self.path(topic, partition)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        ckpt = loads(data)
        if ckpt.topic != topic or ckpt.partition != partition:
            raise CheckpointError(f"{path} holds topic={ckpt.topic} partition={ckpt.partition}")
        return ckpt
