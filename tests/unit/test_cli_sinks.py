"""`cutstream compact` and `cutstream outbox` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from click.testing import CliRunner

from cutstream.cli import main
from sinks.alerts import AlertService, state_dir_for
from sinks.config import AlertsConfig, WebhookConfig
from sinks.parquet import ParquetSink, results_glob
from sinks.testing import result_table


def _count(data: Path) -> tuple[int, float]:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT count(*), sum(aggregatedMeasureValue) FROM read_parquet(?, hive_partitioning=true)",
            [results_glob(data)],
        ).fetchone()


def test_compact_command(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    for i in range(4):
        sink.write(
            result_table(start_ms=1_714_521_600_000 + i * 600_000, values=[float(i)] * 10),
            "events.0",
            i * 10,
            i * 10 + 9,
        )
    before = _count(tmp_path)
    out = CliRunner().invoke(main, ["compact", "--data-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "compacted 3 files into 1" in out.output
    assert _count(tmp_path) == before
    assert len(list(tmp_path.rglob("*.parquet"))) == 2


def test_outbox_command_lists_pending_and_retry_now(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(main, ["outbox", "--data-dir", str(tmp_path)])
    assert empty.exit_code == 0 and "no alert outbox" in empty.output
    cfg = AlertsConfig(webhooks=(WebhookConfig(url="http://127.0.0.1:9/x"),))
    svc = AlertService({"shop": cfg}, state_dir_for(tmp_path))
    svc.observe(result_table(values=[1.0, 9.0, 1.0, 1.0, 1.0], scores=[0, 99, 0, 0, 0]))
    svc.deliver_pending()  # port 9 refuses: the first notification fails, the second waits behind it
    out = runner.invoke(main, ["outbox", "--data-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines() if line.startswith("{")]
    assert [(r["kind"], r["status"]) for r in rows] == [("open", "failing"), ("resolve", "pending")]
    assert rows[0]["lastError"] == "ConnectError talking to http://127.0.0.1:9"
    assert rows[0]["nextAttemptAt"] > rows[0]["createdAt"]
    again = runner.invoke(main, ["outbox", "--data-dir", str(tmp_path), "--retry-now", "--json"])
    assert "2 notifications made due now" in again.output
    assert all(
        json.loads(line)["nextAttemptAt"] == 0 for line in again.output.splitlines() if line.startswith("{")
    )
