"""`cutstream demo`'s checks before it starts anything, and its closing summary."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from cutstream.cli import main
from cutstream.demo import DEMO_MARK, _prepare_data_dir, _summary
from sinks.parquet import ParquetSink
from sinks.testing import result_table
from streams.generator import Spike

T0 = 1_767_225_600_000
HOUR = 3_600_000


def test_a_busy_dashboard_port_is_one_line_and_status_1_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = CliRunner().invoke(main, ["demo", "--port", str(port), "--data-dir", str(tmp_path / "d")])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is in use (another dashboard or demo?): pick another with "
        f'--port (make demo ARGS="--port {port + 1}")'
    ]
    assert not (tmp_path / "d").exists()  # nothing started, nothing written


def test_a_data_dir_that_no_demo_wrote_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine.csv").write_text("keep me")
    out = CliRunner().invoke(main, ["demo", "--no-dashboard", "--data-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert out.output.strip() == (
        f"Error: {tmp_path} holds files that no demo wrote; the demo starts from an empty directory: "
        "pass a new one with --data-dir"
    )
    assert (tmp_path / "mine.csv").read_text() == "keep me"


def test_a_previous_demo_run_is_removed_for_a_fresh_embedded_broker_and_kept_for_real_kafka(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    assert "go to" in _prepare_data_dir(data, embedded=True)
    ParquetSink(data).write(result_table(detector="bookstore", values=[1.0, 2.0]), "t.0", 0, 1)
    (data / "checkpoints" / "cutstream-demo-bookstore").mkdir(parents=True)
    note = _prepare_data_dir(data, embedded=False)
    assert note.startswith("reusing")
    assert list((data / "results").rglob("*.parquet"))
    note = _prepare_data_dir(data, embedded=True)
    assert note.startswith("starting fresh: removed the previous demo run")
    assert sorted(p.name for p in data.iterdir()) == [DEMO_MARK]


def test_a_data_dir_of_an_older_demo_without_the_mark_is_recognised(tmp_path: Path) -> None:
    ParquetSink(tmp_path).write(result_table(detector="bookstore", values=[1.0]), "t.0", 0, 0)
    (tmp_path / "checkpoints" / "cutstream-demo-bookstore").mkdir(parents=True)
    assert _prepare_data_dir(tmp_path, embedded=True).startswith("starting fresh")


def test_the_summary_counts_found_missed_learning_pending_and_other_alarms(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    # item-A: 2 learning windows, then 4 scored: a spike found at 3, another missed at 4, an alarm at 5
    sink.write(
        result_table(detector="bookstore", start_ms=T0, window_ms=HOUR, values=[1, 1], stage="LEARNING"),
        "t.0",
        0,
        1,
    )
    sink.write(
        result_table(
            detector="bookstore",
            start_ms=T0 + 2 * HOUR,
            window_ms=HOUR,
            values=[1] * 4,
            scores=[0, 90, 0, 95],
        ),
        "t.0",
        2,
        5,
    )
    item = (("product_name", "item-A"),)
    spikes = [
        Spike(item, T0 + HOUR, 4.0),  # learning
        Spike(item, T0 + 3 * HOUR, 4.0),  # found
        Spike(item, T0 + 4 * HOUR, 4.0),  # missed
        Spike(item, T0 + 9 * HOUR, 4.0),  # not scored yet
    ]
    assert _summary(tmp_path, spikes) == (
        "6 results for 1 series; found 1 of 2 injected spikes scored after learning; 1 other alarm; "
        "1 spike fell in the learning period; 1 not scored yet when the demo stopped"
    )


def test_a_run_too_short_for_a_spike_says_so(tmp_path: Path) -> None:
    ParquetSink(tmp_path).write(
        result_table(detector="bookstore", start_ms=T0, window_ms=HOUR, values=[1, 1]), "t.0", 0, 1
    )
    assert _summary(tmp_path, []) == (
        "2 results for 1 series; no spike injected yet (they start after 3 simulated days: "
        "run longer or raise --speed); 0 other alarms"
    )
    assert _summary(tmp_path / "none", []) == "no results yet (the run was too short for a window to close)"
