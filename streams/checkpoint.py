"""Per-partition checkpoints: detector state, open windows and the next offset, written atomically.

A checkpoint file lives at ``<data_dir>/checkpoints/<group>/<topic>/<partition>.ckpt`` and holds
everything the worker needs to resume a partition exactly where the checkpoint was taken: the
next offset to consume, the window state, the detector state of the partition's series and the
results that were produced but could not be written to Parquet yet (see docs/ARCHITECTURE.md,
"Stream processing").

The file format is self-describing and never unpickles anything: a magic line, a JSON header
(the nested state with every numpy array replaced by a reference: offset, dtype, shape) and one
binary blob with the raw bytes of every array, back to back (object arrays are stored as JSON lists).
A detector state of thousands of series is a few large arrays (``Detector.to_state`` version 2),
so the blob is written straight from the arrays' memory and read back as views of the file's bytes,
without a copy per array. Writes go to a temporary name, are fsynced and renamed, and the
directory is fsynced, so a crash leaves the old or the new checkpoint.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sinks.storage import writing
from streams.config import DetectorSpec
from streams.errors import ConfigError, StreamsError
from streams.state import CHECKPOINT_FILE, StateVersionError

logger = logging.getLogger(__name__)

MAGIC = b"CUTSTREAM-CKPT\n"
#: Version of the file layout (not of the states inside, which carry their own versions).
VERSION = CHECKPOINT_FILE.current


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
        parked: per detector name, ``{series: segment}`` of those whose models are parked on disk
            (streams/park.py; absent in files written before the model budget: none parked).
        sinks: per sink name, what it carries across a restore (``Sink.carried``: the Parquet
            sink's results of windows closed by the idle timeout after the last input offset, as
            an Arrow IPC stream).
        written_at_ms: wall-clock time of the write (for operators; never used for decisions).
    """

    topic: str
    partition: int
    next_offset: int
    windows: dict[str, Any] = field(default_factory=dict)
    detectors: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)
    sinks: dict[str, bytes] = field(default_factory=dict)
    parked: dict[str, dict[str, str]] = field(default_factory=dict)
    written_at_ms: int = 0


class _Blob:
    """Raw array bytes, back to back, 8-byte aligned."""

    def __init__(self) -> None:
        self.parts: list[memoryview] = []
        self.size = 0

    def add(self, a: np.ndarray) -> dict[str, Any]:
        a = np.ascontiguousarray(a)
        if a.dtype.hasobject or a.dtype.kind == "V":
            raise CheckpointError(f"cannot checkpoint an array of dtype {a.dtype}")
        ref = {"__nd__": [self.size, a.dtype.str, list(a.shape)]}
        # The array's own memory, not a copy: the caller handed over copies (``to_state``).
        data = a.reshape(-1).view(np.uint8).data
        pad = (-len(data)) % 8
        self.parts.append(data)
        if pad:
            self.parts.append(memoryview(b"\0" * pad))
        self.size += len(data) + pad
        return ref


def _array(ref: list[Any], blob: memoryview) -> np.ndarray:
    """The array at ``ref``: a view of ``blob`` when it is writable (a bytearray), else a copy."""
    offset, dtype_str, shape = ref
    dtype = np.dtype(dtype_str)
    count = int(np.prod(shape)) if shape else 1
    a = np.frombuffer(blob, dtype=dtype, count=count, offset=int(offset)).reshape(shape)
    return a if a.flags.writeable else a.copy()


_TAGS = frozenset({"__nd__", "__bytes__", "__tuple__", "__list__", "__dict__"})


def _encode(obj: Any, arrays: _Blob) -> Any:
    t = type(obj)
    if t is str or t is int or t is float or t is bool or obj is None:
        return obj
    if t is dict:
        if (len(obj) == 1 and next(iter(obj)) in _TAGS) or not all(type(k) is str for k in obj):
            return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
        return {k: _encode(v, arrays) for k, v in obj.items()}
    if t is np.ndarray:
        if obj.dtype == object:
            return {"__list__": [_encode(v, arrays) for v in obj.tolist()]}
        return arrays.add(obj)
    if t is list:
        return [_encode(v, arrays) for v in obj]
    if t is tuple:
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    return _encode_other(obj, arrays)


def _encode_other(obj: Any, arrays: _Blob) -> Any:
    """The rarer types: numpy scalars, bytes, subclasses of the plain ones."""
    if isinstance(obj, np.generic):
        return _encode(obj.item(), arrays)
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, bool | int | float | str):  # subclasses (IntEnum, ...)
        return obj
    if isinstance(obj, Mapping):
        return _encode(dict(obj), arrays)
    if isinstance(obj, list | tuple):
        return [_encode(v, arrays) for v in obj]
    raise CheckpointError(f"cannot checkpoint a value of type {type(obj).__name__}")


def _decode(obj: Any, arrays: memoryview) -> Any:
    t = type(obj)
    if t is list:
        return [_decode(v, arrays) for v in obj]
    if t is not dict:
        return obj
    if len(obj) == 1:
        ((tag, payload),) = obj.items()
        if tag in _TAGS:
            if tag == "__nd__":
                return _array(payload, arrays)
            if tag == "__bytes__":
                return base64.b64decode(payload)
            if tag == "__tuple__":
                return tuple(_decode(v, arrays) for v in payload)
            if tag == "__list__":
                return np.array([_decode(v, arrays) for v in payload], dtype=object)
            return {_decode_key(k, arrays): _decode(v, arrays) for k, v in payload}
    return {k: _decode(v, arrays) for k, v in obj.items()}


def _decode_key(k: Any, arrays: memoryview) -> Any:
    value = _decode(k, arrays)
    return value if not isinstance(value, list) else tuple(value)


def dumps(ckpt: Checkpoint) -> bytes:
    """Serialize a checkpoint (see the module docstring for the layout)."""
    return b"".join(_parts(ckpt))


def _parts(ckpt: Checkpoint) -> list[bytes | memoryview]:
    """The file's bytes in pieces (the arrays' pieces are views of their memory)."""
    arrays = _Blob()
    header = {
        "version": VERSION,
        "topic": ckpt.topic,
        "partition": ckpt.partition,
        "next_offset": ckpt.next_offset,
        "written_at_ms": ckpt.written_at_ms,
        "series": ckpt.series,
        "parked": ckpt.parked,
        "windows": _encode(ckpt.windows, arrays),
        "detectors": _encode(ckpt.detectors, arrays),
        "sinks": _encode(ckpt.sinks, arrays),
    }
    head = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    crc = zlib.crc32(head)
    for part in arrays.parts:
        crc = zlib.crc32(part, crc)
    return [MAGIC, f"{len(head)} {arrays.size} {crc}\n".encode(), head, *arrays.parts]


def loads(data: bytes | bytearray | memoryview) -> Checkpoint:
    """Parse :func:`dumps` output; raise :class:`CheckpointError` on anything unexpected.

    Arrays are views of ``data`` when it is writable (a ``bytearray``, as
    :meth:`CheckpointStore.load` reads it), copies otherwise.
    """
    view = memoryview(data).cast("B")
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise CheckpointError("not a cutstream checkpoint (bad magic)")
    at = len(MAGIC)
    eol = bytes(view[at : at + 64]).find(b"\n")
    try:
        n_head, n_body, crc = (int(x) for x in bytes(view[at : at + max(eol, 0)]).split())
    except ValueError as exc:
        raise CheckpointError("corrupt checkpoint header line") from exc
    at += eol + 1
    head, body = bytes(view[at : at + n_head]), view[at + n_head : at + n_head + n_body]
    if len(head) != n_head or len(body) != n_body or zlib.crc32(body, zlib.crc32(head)) != crc:
        raise CheckpointError("checkpoint is truncated or corrupt (length or CRC mismatch)")
    try:
        header = CHECKPOINT_FILE.upgrade(json.loads(head))
    except StateVersionError as exc:
        raise CheckpointError(str(exc)) from exc
    arrays = body
    return Checkpoint(
        topic=header["topic"],
        partition=int(header["partition"]),
        next_offset=int(header["next_offset"]),
        written_at_ms=int(header.get("written_at_ms", 0)),
        series={k: list(v) for k, v in header["series"].items()},
        parked={k: {str(a): str(b) for a, b in v.items()} for k, v in header.get("parked", {}).items()},
        windows=_decode(header["windows"], arrays),
        detectors=_decode(header["detectors"], arrays),
        sinks=_decode(header["sinks"], arrays),
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(
    final: Path, parts: list[bytes | memoryview], what: str, *, tmp: Path | None = None, mkdir: bool = True
) -> int:
    """Write ``parts`` to ``final`` atomically and durably (temp file, fsync, rename, fsync the
    directory; a full disk or a read-only directory is one line naming the path, no temp file left);
    returns the bytes written. ``tmp``: the temporary name (default ``.<name>.<pid>.tmp``);
    ``mkdir``: create the missing parent directories."""
    tmp = tmp or final.with_name(f".{final.name}.{os.getpid()}.tmp")
    size = 0
    with writing(final, what, tmp):
        if mkdir:
            final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            for part in parts:
                size += f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    return size


class CheckpointStore:
    """Checkpoint files of one consumer group: ``<data_dir>/checkpoints/<group>/<topic>/<p>.ckpt``."""

    def __init__(self, data_dir: Path, group_id: str) -> None:
        self.root = Path(data_dir) / "checkpoints" / group_id

    def path(self, topic: str, partition: int) -> Path:
        return self.root / topic / f"{partition}.ckpt"

    def save(self, ckpt: Checkpoint) -> Path:
        """Write atomically: temp file, fsync, rename, fsync the directory."""
        final = self.path(ckpt.topic, ckpt.partition)
        size = write_durably(final, _parts(ckpt), "checkpoint")
        logger.debug(
            "checkpoint saved topic=%s partition=%d next_offset=%d bytes=%d",
            ckpt.topic,
            ckpt.partition,
            ckpt.next_offset,
            size,
        )
        return final

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        """The partition's checkpoint, or None when it has none."""
        path = self.path(topic, partition)
        try:
            with open(path, "rb") as f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                n = f.readinto(data)
        except FileNotFoundError:
            return None
        ckpt = loads(memoryview(data)[:n])  # writable: the arrays are views, not copies
        if ckpt.topic != topic or ckpt.partition != partition:
            raise CheckpointError(f"{path} holds topic={ckpt.topic} partition={ckpt.partition}")
        return ckpt


# -- warm-start files: a checkpoint that belongs to no partition -------------------------------------


def save_warm_start(det: Any, spec: DetectorSpec, path: Path) -> int:
    """Write every series' model for ``cutstream worker --warm-start``; returns the series count.

    The file is a checkpoint (this module's format: JSON header, raw array bytes, a CRC, never
    unpickled) that belongs to no partition: topic ``warm-start:<detector>``.
    """
    keys = det.keys()
    ckpt = Checkpoint(
        topic=f"warm-start:{spec.name}",
        partition=-1,
        next_offset=0,
        detectors={spec.name: det.to_state(keys)},
        series={spec.name: keys},
    )
    write_durably(path, _parts(ckpt), "warm-start file", tmp=path.with_name(f".{path.name}.tmp"), mkdir=False)
    return len(keys)


def warm_start_detector(path: Path) -> str:
    """The name of the detector whose models a warm-start file holds."""
    try:
        ckpt = loads(Path(path).read_bytes())
    except (OSError, CheckpointError) as exc:
        raise CheckpointError(f"cannot read the warm-start file {path}: {exc}") from exc
    return ckpt.topic.removeprefix("warm-start:")


def load_warm_start(path: Path, spec: DetectorSpec) -> dict[str, Any]:
    """The detector state saved by :func:`save_warm_start` for ``spec`` (checked to match it)."""
    ckpt = loads(Path(path).read_bytes())
    if ckpt.topic != f"warm-start:{spec.name}" or spec.name not in ckpt.detectors:
        raise ConfigError(f"{path} was not made for detector {spec.name!r} ({ckpt.topic})")
    state: dict[str, Any] = ckpt.detectors[spec.name]
    if state.get("config") != spec.model.model_dump(mode="json"):
        raise ConfigError(
            f"{path} was made with other model settings than detector {spec.name!r} has now; "
            "run the backfill again"
        )
    return state
