"""A newcomer's mistakes end in one clear line and a documented exit status, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cutstream.cli import main
from sinks.parquet import ParquetSink
from sinks.testing import result_table


def _results(data: Path) -> None:
    ParquetSink(data).write(result_table(values=[1.0, 2.0], scores=[0.0, 90.0]), "events.0", 0, 1)


def test_query_of_a_table_that_is_not_there_names_the_results_view(tmp_path: Path) -> None:
    _results(tmp_path)
    out = CliRunner().invoke(main, ["query", "SELECT * FROM anomalies", "--data-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert out.output.strip() == (
        "Error: there is no table 'anomalies': the results are the view `results` "
        "(its anomalies: ... FROM results WHERE anomalyDecision = 1)"
    )


def test_query_of_a_mistyped_data_dir_says_so_instead_of_0_rows(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        main, ["query", "SELECT count(*) FROM results", "--data-dir", str(tmp_path / "dta")]
    )
    assert out.exit_code == 1
    assert out.output.strip() == (
        f"Error: no data directory {tmp_path / 'dta'}: pass the one the worker or demo writes to "
        "(--data-dir or CUTSTREAM_DATA_DIR)"
    )


def test_query_of_a_directory_without_results_runs_and_says_there_are_none(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        main, ["query", "SELECT count(*) AS n FROM results", "--data-dir", str(tmp_path)]
    )
    assert out.exit_code == 0
    assert f"note: {tmp_path} holds no results yet (is it the worker's --data-dir?)" in out.stderr
    assert "(1 rows)" in out.stdout


def test_score_lists_the_lines_of_every_bad_value_and_exits_1(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    rows = [f"2026-01-01 00:{m:02d}:00,{m}" for m in range(10)]
    rows[2] = "2026-01-01 00:02:00,abc"
    rows[5] = "2026-01-01 00:05:00"  # a missing column
    rows[7] = "2026-01-01 00:07:00,nan"
    src.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    out = CliRunner().invoke(main, ["score", str(src), "--output", str(tmp_path / "out.csv")])
    assert out.exit_code == 1
    assert out.output.strip() == (
        f"Error: {src}: 3 row(s) without a finite number in 'value', on line(s) 4, 7, 9; "
        "fill or drop them first"
    )
    assert not (tmp_path / "out.csv").exists()


def test_compact_prints_each_partition_once(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    for day in range(2):
        for i in range(3):
            start = 1_714_521_600_000 + day * 86_400_000 + i * 600_000
            sink.write(
                result_table(start_ms=start, values=[float(i)] * 5), f"events.{day}", i * 10, i * 10 + 4
            )
    done = subprocess.run(
        [sys.executable, "-m", "cutstream", "compact", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    for day in ("2024-05-01", "2024-05-02"):
        assert sum(f"date={day}" in line for line in lines) == 1, lines
    assert lines[-1].startswith("compacted ")


def test_backfill_skips_rows_of_the_wrong_width_with_their_file_lines_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        '{"detectors": [{"name": "shop", "timestamp_field": "ts", "dimensions": ["item"],'
        ' "measures": [{"field": "qty"}]}]}'
    )
    hist = tmp_path / "h.csv"
    rows = [f"2026-01-01 00:{m:02d}:00,A,{m}" for m in range(6)]
    rows[1] = "2026-01-01 00:01:00,A"  # line 3: a column short
    rows[3] = "2026-01-01 00:03:00,A,3,9"  # line 5: one too many
    rows[4] = "2026-01-01 00:04:00,A,x"  # line 6: not a number (numbered after the skipped rows)
    hist.write_text("ts,item,qty\n" + "\n".join(rows) + "\n")
    out = CliRunner().invoke(
        main, ["backfill", str(hist), "--config", str(config), "--data-dir", str(tmp_path)]
    )
    assert out.exit_code == 2, out.output
    assert "3 history rows skipped:" in out.stderr
    assert f"{hist}:3: 2 fields where the header has 3" in out.stderr
    assert f"{hist}:5: 4 fields where the header has 3" in out.stderr
    assert f"{hist}:6: non-numeric qty 'x'" in out.stderr
    assert "Traceback" not in out.output
    assert "backfilled 3 events" in out.stdout


def test_backfill_reads_epoch_seconds_as_seconds_among_milliseconds(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        '{"detectors": [{"name": "shop", "timestamp_field": "ts", "dimensions": ["item"],'
        ' "measures": [{"field": "qty"}]}]}'
    )
    hist = tmp_path / "h.csv"
    hist.write_text("ts,item,qty\n1767225600000,A,1\n1767225660,A,2\n1767225720000,A,3\n")
    out = CliRunner().invoke(
        main, ["backfill", str(hist), "--config", str(config), "--data-dir", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    # three consecutive minutes: the seconds were not read as milliseconds of 1970
    assert "backfilled 3 events into 3 results" in out.stdout
