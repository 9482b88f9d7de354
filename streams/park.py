"""Cold models on disk: the model budget's eviction target (``DetectorSpec.max_models``).

When a detector holds more live models than its budget, the pipeline parks the coldest series (the
ones scored least recently) here and drops them from memory; when one of them has a window to score
again, its model is read back before the step, so that it scores exactly as if it had never left
(a test checks bit-identical results against an unbounded run). A series that has seen a single
point is dropped instead of parked (a producer with a unique id in a dimension makes a million of
them; each would cost a disk write to save one point of learning).

Layout: one directory per partition and detector, next to the partition's checkpoint
(``<data_dir>/checkpoints/<group>/<topic>/<partition>.models/<detector>/``). Each eviction writes one
*segment*: the detector state of the series it parks, in the checkpoint file format (JSON header,
raw arrays, CRC; never unpickled), under a fresh name, fsynced, never rewritten. The park keeps an
index ``series -> segment`` in memory; a partition's checkpoint records the index entries of its
series, so a restore (after a crash or on another worker) finds the same segments. A segment is
deleted once neither the live index nor the partition's latest durable checkpoint refers to it
(:meth:`ModelPark.collect`, called after each checkpoint is durable).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

from detector.state import select_detector_state
from streams.checkpoint import Checkpoint, CheckpointError, dumps, loads, write_durably

logger = logging.getLogger(__name__)

SUFFIX = ".models"


class ModelPark:
    """Parked (evicted) models of one detector, across its partitions.

    Args:
        detector: the detector's name (part of each directory).
        directory: the folder of a partition's segments (created on first use).
    """

    def __init__(self, detector: str, directory: Callable[[Any], Path]) -> None:
        self.detector = detector
        self._directory = directory
        self._where: dict[str, tuple[Hashable, str]] = {}  # series -> (partition, segment name)
        self.parked_total = 0
        self.reloaded_total = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def _dir(self, tp: Hashable) -> Path:
        return self._directory(tp) / self.detector

    def put(self, tp: Hashable, state: dict[str, Any]) -> str:
        """Write the detector state of some of ``tp``'s series as a new segment; returns its name."""
        keys = [str(k) for k in state["keys"]]
        name = f"seg-{uuid.uuid4().hex}.ckpt"
        segment = Checkpoint(topic=f"park:{self.detector}", partition=-1, next_offset=0,
                             detectors={self.detector: state}, series={self.detector: keys})  # fmt: skip
        write_durably(self._dir(tp) / name, [dumps(segment)], "parked models")
        for k in keys:
            self._where[k] = (tp, name)
        self.parked_total += len(keys)
        return name

    def take(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The states of the parked ``keys`` (one per segment read), which leave the index."""
        by_segment: dict[tuple[Hashable, str], list[str]] = defaultdict(list)
        for k in keys:
            at = self._where.pop(k, None)
            if at is not None:
                by_segment[at].append(k)
        states = []
        for (tp, name), wanted in by_segment.items():
            path = self._dir(tp) / name
            try:
                ckpt = loads(bytearray(path.read_bytes()))
            except (OSError, CheckpointError) as exc:
                raise CheckpointError(f"cannot read parked models {path}: {exc}") from exc
            state = ckpt.detectors[self.detector]
            row = {k: i for i, k in enumerate(state["keys"])}
            states.append(select_detector_state(state, [row[k] for k in wanted]))
            self.reloaded_total += len(wanted)
        return states

    def refs(self, keys: Iterable[str]) -> dict[str, str]:
        """``{series: segment}`` of the parked ones among ``keys`` (what a checkpoint records)."""
        return {k: at[1] for k in keys if (at := self._where.get(k)) is not None}

    def adopt(self, tp: Hashable, refs: Mapping[str, str]) -> None:
        """Take over a restored partition's parked series (from its checkpoint)."""
        for k, name in refs.items():
            self._where[k] = (tp, name)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop index entries (the partition was revoked; its checkpoint still names the files)."""
        for k in keys:
            self._where.pop(k, None)

    def collect(self, tp: Hashable, durable: Iterable[str]) -> int:
        """Delete ``tp``'s segments that neither the index nor ``durable`` (the segments named by
        the partition's latest durable checkpoint) refers to; returns how many."""
        keep = set(durable) | {name for (p, name) in self._where.values() if p == tp}
        folder = self._dir(tp)
        removed = 0
        try:
            names = [p.name for p in folder.iterdir() if p.name.startswith("seg-")]
        except FileNotFoundError:
            return 0
        for name in names:
            if name not in keep:
                (folder / name).unlink(missing_ok=True)
                removed += 1
        return removed
