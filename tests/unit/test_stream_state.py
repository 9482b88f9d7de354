"""streams.state: one version table for the stream side; old versions load, only the newest is written."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from streams.checkpoint import MAGIC, Checkpoint, CheckpointError, dumps, loads
from streams.state import CHECKPOINT_FILE, PARTS, WINDOW_STATE, StateVersionError, part

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_every_old_checkpoint_layout_has_a_golden_file_that_loads() -> None:
    for version in CHECKPOINT_FILE.mappers:
        ckpt = loads((GOLDEN / f"checkpoint_v{version}_detector_v1.ckpt").read_bytes())
        assert ckpt.topic and ckpt.detectors, version
        assert set(ckpt.sinks) <= {"parquet"}  # layout 2's pending results, keyed by their sink


def test_only_the_newest_layout_is_written_and_sinks_round_trip() -> None:
    ckpt = Checkpoint("t", 3, 42, sinks={"parquet": b"\x00arrow", "other": b""})
    data = dumps(ckpt)
    head_len = int(data[len(MAGIC) :].split(b"\n", 1)[0].split()[0])
    header = json.loads(data[len(MAGIC) :].split(b"\n", 1)[1][:head_len])
    assert header["version"] == CHECKPOINT_FILE.current == max(CHECKPOINT_FILE.readable)
    assert loads(data).sinks == {"parquet": b"\x00arrow", "other": b""}


def test_an_unknown_version_is_refused_with_what_can_be_read() -> None:
    head = json.dumps({"version": 99}).encode()
    data = MAGIC + f"{len(head)} 0 {zlib.crc32(head)}\n".encode() + head
    with pytest.raises(CheckpointError, match=r"version 99 is not supported \(this version reads 2, 3\)"):
        loads(data)


def test_mappers_run_one_step_at_a_time() -> None:
    thing = part(
        "thing",
        3,
        {1: lambda s: {**s, "version": 2, "b": 1}, 2: lambda s: {**s, "version": 3, "c": s["b"] + 1}},
    )
    assert thing.upgrade({"version": 1}) == {"version": 3, "b": 1, "c": 2}
    assert thing.upgrade({"version": 3, "x": 0}) == {"version": 3, "x": 0}
    with pytest.raises(StateVersionError, match="thing version 0"):
        thing.upgrade({"version": 0})


def test_the_table_names_every_part() -> None:
    assert {p.name for p in PARTS} == {"checkpoint file layout", "window state", "replay position file"}
    assert WINDOW_STATE.readable == (1,)
