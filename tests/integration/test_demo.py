"""`cutstream demo` unattended: the dashboard answers, the results are queryable, an injected spike is
flagged and a normal window is not; everything stops by itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
import pytest

from sinks import query
from streams.broker import free_port
from streams.generator import bookstore
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


def test_demo_runs_unattended_and_reports_the_injected_spikes(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cutstream",
            "demo",
            "--duration",
            "50",
            "--speed",
            "6",
            "--data-dir",
            str(data),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "dashboard: http://" in line:
            break
    url = f"http://127.0.0.1:{port}/"

    def dashboard_up() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(dashboard_up, timeout_s=60, message="the dashboard to answer")
    out, _ = proc.communicate(timeout=180)
    lines.append(out)
    text = "".join(lines)
    assert proc.returncode == 0, text[-3000:]
    hours = int(re.search(r"over (\d+) simulated hours", text).group(1))
    assert hours >= 150, text[-2000:]
    spikes = {(s.dims[0][1], s.window_start_ms) for b in bookstore(hours) for s in b.spikes}
    rows = duckdb.sql(
        "SELECT dimensionList[1].value AS item, epoch_ms(windowStart) AS start, anomalyDecision, modelStage "
        f"FROM read_parquet('{data}/results/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert rows, text[-2000:]
    flagged = {(item, start) for item, start, decision, _ in rows if decision == 1}
    normal = [
        (item, start)
        for item, start, decision, stage in rows
        if decision == 0 and stage == "INFERENCE" and (item, start) not in spikes
    ]
    assert flagged & spikes, f"no injected spike flagged: spikes={sorted(spikes)} flagged={sorted(flagged)}"
    assert normal
    assert {stage for *_, stage in rows} == {"LEARNING", "INFERENCE"}
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)  # the dashboard stopped with the demo
    # the summary counts the spikes it found among those it scored, and the other alarms apart
    found, scored, other = map(
        int,
        re.search(r"found (\d+) of (\d+) injected spikes scored after learning; (\d+) other", text).groups(),
    )
    assert 0 < found <= scored
    assert other == len(flagged - spikes)
    # the alerts went to the demo's own webhook receiver and SMTP catcher, and are kept for reading
    webhooks, emails = map(int, re.search(r"alerts received: (\d+) webhooks, (\d+) emails", text).groups())
    assert webhooks > 0 and emails > 0
    assert len(list((data / "inbox").glob("webhook-*.json"))) == webhooks
    assert "Subject:" in next((data / "inbox").glob("email-*.eml")).read_text()
    assert query.incidents(data).num_rows > 0  # what the dashboard's incidents table shows
    assert "connection refused" not in text.lower()  # the Kafka clients closed before the broker stopped


def _demo(data: Path, duration: int) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cutstream",
            "demo",
            "--no-dashboard",
            "--duration",
            str(duration),
            "--speed",
            "6",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_a_second_demo_on_the_same_data_dir_starts_fresh_and_produces_new_results(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    _demo(data, 25)
    first = {p.name: p.stat().st_mtime_ns for p in (data / "results").rglob("*.parquet")}
    assert first
    out = _demo(data, 25)
    assert f"starting fresh: removed the previous demo run from {data}" in out
    second = {p.name: p.stat().st_mtime_ns for p in (data / "results").rglob("*.parquet")}
    # every file is new (the old run's are gone, none kept or skipped), and there are results again
    assert second and all(first.get(name, -1) < mtime for name, mtime in second.items())
