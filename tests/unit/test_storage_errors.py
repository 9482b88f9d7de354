"""A full disk or a refused write while writing results or checkpoints: one StorageError naming the
path and what to do, and no temporary file left behind.

The disk-full case cannot be caused without root (no small file system to fill): the write's temp
file is made a link to ``/dev/full``, so the kernel itself answers ENOSPC. The permission case is
caused for real with ``chmod``, and skipped where the tests run as root (whom chmod does not stop;
``tests/integration/test_disk_errors.py`` covers root with real mounts and a real unprivileged user).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinks.errors import StorageError
from sinks.parquet import ParquetSink, file_name, partition_dir
from sinks.testing import result_table
from streams.checkpoint import Checkpoint, CheckpointStore, save_warm_start

TABLE = result_table(detector="shop", start_ms=1_714_521_600_000, values=[1.0, 2.0, 3.0])
DATE = "2024-05-01"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")


@needs_dev_full
def test_disk_full_while_writing_parquet(tmp_path: Path) -> None:
    pdir = partition_dir(tmp_path, "shop", DATE)
    pdir.mkdir(parents=True)
    name = file_name("events-0", 0, 9)
    (pdir / f".{name}.tmp").symlink_to("/dev/full")  # the write lands on a full device
    with pytest.raises(StorageError) as err:
        ParquetSink(tmp_path).write(TABLE, "events-0", 0, 9)
    msg = str(err.value)
    assert msg.startswith(f"cannot write the Parquet results file {pdir / name}: no space left on the device")
    assert "\n" not in msg
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp") or f.endswith(".parquet")]
    # and once there is room again, the same call publishes the file
    assert ParquetSink(tmp_path).write(TABLE, "events-0", 0, 9) == [pdir / name]


@needs_dev_full
def test_disk_full_while_writing_a_checkpoint_or_models(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "g")
    final = store.path("events", 0)
    final.parent.mkdir(parents=True)
    (final.parent / f".{final.name}.{os.getpid()}.tmp").symlink_to("/dev/full")
    with pytest.raises(StorageError, match=r"cannot write the checkpoint .*0\.ckpt: no space left"):
        store.save(Checkpoint(topic="events", partition=0, next_offset=5, windows={"x": "y" * 100_000}))
    assert _files(tmp_path) == []

    class NoModels:
        def keys(self) -> list[str]:
            return []

        def to_state(self, keys: list[str]) -> dict[str, object]:
            return {"pad": "z" * 100_000}

    from streams.config import DetectorSpec

    spec = DetectorSpec(name="shop", topic="t", measures=({"field": "q"},))
    out = tmp_path / "models.ckpt"
    (tmp_path / ".models.ckpt.tmp").symlink_to("/dev/full")
    with pytest.raises(StorageError, match=r"cannot write the warm-start file .*models\.ckpt: no space left"):
        save_warm_start(NoModels(), spec, out)
    assert _files(tmp_path) == []


def _chmod_stops_us(path: Path) -> bool:
    probe = path / ".probe"
    try:
        probe.touch()
    except PermissionError:
        return True
    probe.unlink()
    return False


def test_read_only_data_dir_is_one_line_with_the_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        if not _chmod_stops_us(data):
            pytest.skip("running as root: chmod does not deny (test_disk_errors.py covers it)")
        with pytest.raises(StorageError) as err:
            ParquetSink(data).write(TABLE, "events-0", 0, 9)
        assert str(err.value).startswith(f"cannot write the Parquet results file {data / 'results'}: ")
        assert (
            f"permission denied; let the user running cutstream (uid {os.geteuid()}) write to {data}"
            in str(err.value)
        )
        with pytest.raises(StorageError, match=r"cannot write the checkpoint .*: permission denied"):
            CheckpointStore(data, "g").save(Checkpoint(topic="events", partition=0, next_offset=1))
        assert _files(data) == []
    finally:
        data.chmod(0o755)
