"""The progress bars of `cutstream backfill` and `cutstream compact`: drawn when stderr is a terminal
(a real pseudo-terminal here), never into a pipe, never with --no-progress."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from sinks.parquet import ParquetSink
from sinks.testing import result_table
from tests.functional.test_backfill import SPEC, _history


def _run(args: list[str], terminal: bool) -> tuple[int, str, str]:
    """`python -m cutstream ARGS` with stderr on a pseudo-terminal or a pipe: (status, stdout, stderr)."""
    cmd = [sys.executable, "-m", "cutstream", *args]
    if not terminal:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr
    master, replica = pty.openpty()
    # a new pseudo-terminal is 0 columns wide (the bar would fit nothing): 24 x 120, like a window
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=replica) as child:
            os.close(replica)
            replica = -1
            chunks = []
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal (it exited)
                    break
                if not data:
                    break
                chunks.append(data)
            assert child.stdout is not None
            out = child.stdout.read().decode()
            rc = child.wait(timeout=300)
    finally:
        os.close(master)
        if replica >= 0:
            os.close(replica)
    return rc, out, b"".join(chunks).decode(errors="replace")


def test_backfill_draws_a_bar_of_rows_on_a_terminal_only(tmp_path: Path) -> None:
    hist = tmp_path / "h.csv"
    _history(hist, windows=60)  # 60 windows x 2 items x 3 rows
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"detectors": [SPEC.model_dump(mode="json")]}))
    args = ["backfill", str(hist), "--config", str(config), "--data-dir", str(tmp_path / "d")]

    rc, out, err = _run(args, terminal=True)
    assert rc == 0 and "backfilled 360 events" in out, out + err
    assert "backfill: 100%" in err and "360/360" in err and "rows" in err, err

    rc, out, err = _run([*args, "--no-progress"], terminal=True)
    assert rc == 0 and "backfilled 360 events" in out, out + err
    assert "%" not in err and "rows/s" not in err, err

    rc, out, err = _run(args, terminal=False)
    assert rc == 0 and "backfilled 360 events" in out, out + err
    assert "%" not in err and "rows/s" not in err, err


def test_compact_draws_a_bar_of_partitions_on_a_terminal_only(tmp_path: Path) -> None:
    day_ms = 86_400_000
    for day in range(3):  # three date partitions, two files each (the newest is never compacted)
        for i in range(2):
            ParquetSink(tmp_path).write(
                result_table(start_ms=1_714_521_600_000 + day * day_ms + i * 600_000, values=[1.0] * 5),
                "events.0",
                day * 10 + i * 5,
                day * 10 + i * 5 + 4,
            )
    args = ["compact", "--data-dir", str(tmp_path)]

    rc, out, err = _run([*args, "--no-progress"], terminal=True)
    assert rc == 0 and "compacted" in out, out + err
    assert "%" not in err and "partitions" not in err, err

    rc, out, err = _run(args, terminal=False)
    assert rc == 0 and "compacted" in out, out + err
    assert "%" not in err and "partitions" not in err, err

    rc, out, err = _run(args, terminal=True)
    assert rc == 0 and "compacted" in out, out + err
    assert "compact: 100%" in err and "3/3" in err and "partitions" in err, err
