"""`cutstream backfill` against a data directory it cannot write, caused for real: a directory it has
no permission on, a read-only file system, a full file system. Each ends in one line that names the
path and says what to do (exit status 1), never a traceback, and leaves no temporary file.

Root ignores permission bits, so as root the permission case runs without the capabilities that let
it (``setpriv``); the read-only and full file systems are small tmpfs mounts in a private mount
namespace (``unshare --map-root-user --mount``), skipped where the machine does not allow one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONFIG = (
    "detectors:\n"
    "  - name: shop\n"
    "    topic: orders\n"
    "    timestamp_field: ts\n"
    "    dimensions: [item]\n"
    "    measures: [{field: qty, aggregation: sum}]\n"
    "    model: {forest: {n_trees: 5, sample_size: 16}}\n"
)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "detectors.yaml"
    config.write_text(CONFIG)
    hist = tmp_path / "h.csv"
    hist.write_text("ts,item,qty\n" + "".join(f"2026-01-01 00:{m:02d}:00,A,{m}\n" for m in range(5)))
    return config, hist


def _backfill(hist: Path, config: Path, data: Path) -> list[str]:
    cli = [sys.executable, "-m", "cutstream", "backfill"]
    return [*cli, str(hist), "--config", str(config), "--data-dir", str(data)]


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: cannot write the Parquet results file "), stderr
    return last


def test_permission_denied(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    config, hist = inputs
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: no way to be refused")
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]  # root, minus DAC override
    try:
        run = subprocess.run(
            prefix + _backfill(hist, config, data), capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 1
        line = _one_line_error(run.stderr)
        assert f"{data / 'results'}: permission denied; let the user running cutstream" in line
        assert f"write to {data}, or point cutstream at a directory it may write to" in line
        assert list(data.rglob("*")) == []
    finally:
        data.chmod(0o755)


def _in_private_mount(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--map-root-user", "--mount", "--propagation", "private", "sh", "-ec", script],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def private_mounts(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = tmp_path / "probe"
    probe.mkdir()
    if _in_private_mount(f"mount -t tmpfs -o size=64k tmpfs {probe}").returncode != 0:
        pytest.skip("this machine allows no private mount namespace (user namespaces off)")


@pytest.mark.usefixtures("private_mounts")
def test_read_only_file_system(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    config, hist = inputs
    data = tmp_path / "data"
    data.mkdir()
    cmd = shlex.join(_backfill(hist, config, data))
    run = _in_private_mount(f"mount -t tmpfs -o ro,size=1m tmpfs {data}\n{cmd} || echo EXIT=$?")
    assert "EXIT=1" in run.stdout, run.stderr
    line = _one_line_error(run.stderr)
    assert f"{data / 'results'}: the file system is read-only; mount it read-write" in line


@pytest.mark.usefixtures("private_mounts")
def test_disk_full(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    config, hist = inputs
    data = tmp_path / "data"
    data.mkdir()
    cmd = shlex.join(_backfill(hist, config, data))
    run = _in_private_mount(
        f"mount -t tmpfs -o size=256k tmpfs {data}\n"
        f"mkdir -p {data}/results/detector=shop/date=2026-01-01\n"
        f"dd if=/dev/zero of={data}/filler bs=4k 2>/dev/null || true\n"  # until the disk is full
        f"{cmd} || echo EXIT=$?\n"
        f"echo \"LEFT:[$(find {data} -name '*.tmp' -o -name '*.parquet')]\"\n"
    )
    assert "EXIT=1" in run.stdout, run.stderr
    line = _one_line_error(run.stderr)
    assert f"{data}/results/detector=shop/date=2026-01-01/" in line
    assert ": no space left on the device" in line
    assert "LEFT:[]" in run.stdout  # neither a temp file nor a partial result file
