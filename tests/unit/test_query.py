"""sinks.query against a naive computation over the same files (read with pyarrow, summed in Python)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sinks.query as q
from sinks.parquet import ParquetSink
from sinks.record import RESULT_SCHEMA
from sinks.testing import result_table

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
EVIL = "x'; DROP TABLE results; --\"%_"


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three series of one detector over 30 hours (two date partitions), one more detector, through
    the real Parquet sink, in several flushes; one dimension value carries SQL metacharacters."""
    root = tmp_path_factory.mktemp("results")
    sink = ParquetSink(root)
    specs: list[dict[str, Any]] = [
        {"detector": "shop", "measure": "quantity", "dimensions": {"product": "item-A"}, "spike": 20},
        {"detector": "shop", "measure": "quantity", "dimensions": {"product": "item-B"}, "spike": 27},
        {"detector": "shop", "measure": "price", "dimensions": {"product": EVIL}, "spike": None},
        {"detector": "hosts", "measure": "cpu", "dimensions": {"host": "h1", "dc": "eu"}, "spike": 5},
    ]
    offset = 0
    for k, spec in enumerate(specs):
        n = 30
        values = [100.0 + k + (i % 5) for i in range(n)]
        scores = [10.0 + (i * 7 + k) % 40 for i in range(n)]
        if spec["spike"] is not None:
            values[spec["spike"]] = 900.0
            scores[spec["spike"]] = 95.0 - k
        table = result_table(
            detector=spec["detector"],
            measure=spec["measure"],
            dimensions=spec["dimensions"],
            start_ms=T0,
            window_ms=HOUR,
            values=values,
            scores=scores,
            expected=[100.0 + k] * n,
            confidence=50.0 + k,
        )
        conf = pa.array([float(i + k) for i in range(n)])
        table = table.set_column(
            table.schema.get_field_index("anomalyConfidenceScore"), "anomalyConfidenceScore", conf
        )
        for lo in range(0, n, 10):  # three flushes per series
            part = table.slice(lo, 10)
            sink.write(part, f"events.{k}", offset, offset + part.num_rows - 1)
            offset += part.num_rows
    return root


@pytest.fixture
def data_dir(written: Path, tmp_path: Path) -> Path:
    """A private copy of the written results (tests may add files)."""
    import shutil

    shutil.copytree(written, tmp_path / "data")
    return tmp_path / "data"


def _naive_rows(data_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((data_dir / "results").rglob("*.parquet")):
        if not path.name.startswith("."):
            rows.extend(pq.read_table(path, schema=RESULT_SCHEMA).to_pylist())
    return rows


def _in(row: dict[str, Any], start: dt.datetime | None, end: dt.datetime | None) -> bool:
    t = row["windowStart"]
    return (start is None or t >= start) and (end is None or t < end)


@pytest.mark.parametrize(
    "period", [(None, None), (_utc(T0 + 10 * HOUR), None), (_utc(T0 + 3 * HOUR), _utc(T0 + 26 * HOUR))]
)
def test_kpis_equal_a_naive_count(data_dir: Path, period: tuple[Any, Any]) -> None:
    start, end = period
    rows = [r for r in _naive_rows(data_dir) if _in(r, start, end)]
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["timeseriesId"] not in latest or r["windowStart"] > latest[r["timeseriesId"]]["windowStart"]:
            latest[r["timeseriesId"]] = r
    k = q.kpis(data_dir, start, end)
    assert k["series"] == len(latest) == 4
    assert k["windows"] == len(rows)
    assert k["anomalies"] == sum(r["anomalyDecision"] for r in rows)
    assert k["data_points"] == sum(r["processedDataPoints"] for r in latest.values())
    assert k["mean_confidence"] == pytest.approx(
        sum(r["anomalyConfidenceScore"] for r in latest.values()) / len(latest)
    )
    assert k["newest_window"] == max(r["windowStart"] for r in rows)
    assert k["files"] == len(list((data_dir / "results").rglob("[!.]*.parquet")))


def test_top_series_orders_by_max_score_in_the_period(data_dir: Path) -> None:
    start = _utc(T0 + 21 * HOUR)  # after item-A's spike (window 20)
    rows = [r for r in _naive_rows(data_dir) if _in(r, start, None)]
    best: dict[str, float] = {}
    for r in rows:
        best[r["timeseriesId"]] = max(best.get(r["timeseriesId"], 0.0), r["anomalyScore"])
    expected = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    top = q.top_series(data_dir, start, None, limit=3)
    assert (
        list(zip(top.column("timeseriesId").to_pylist(), top.column("maxScore").to_pylist(), strict=True))
        == expected[:3]
    )
    only_shop = q.top_series(data_dir, start, None, limit=10, detector="shop", measure="quantity")
    assert set(only_shop.column("dimensions").to_pylist()) == {"product=item-A", "product=item-B"}


def test_search_is_literal_and_case_insensitive(data_dir: Path) -> None:
    hit = q.search_series(data_dir, None, None, "ITEM-b", 10)
    assert hit.column("dimensions").to_pylist() == ["product=item-B"]
    # SQL and LIKE metacharacters are data: they find the one series whose value holds them
    evil = q.search_series(data_dir, "shop", None, EVIL, 10)
    assert evil.column("dimensions").to_pylist() == [f"product={EVIL}"]
    assert q.search_series(data_dir, None, None, "%", 10).column("dimensions").to_pylist() == [
        f"product={EVIL}"
    ]
    assert q.search_series(data_dir, None, None, "'; DROP TABLE x; --", 10).num_rows == 0
    assert q.search_series(data_dir, "hosts", "cpu", "dc=eu", 10).num_rows == 1
    # the files are untouched and still answer
    assert q.kpis(data_dir)["series"] == 4


def test_series_points_equal_the_rows_of_that_series(data_dir: Path) -> None:
    sid = q.search_series(data_dir, None, None, "item-A", 1).column("timeseriesId")[0].as_py()
    start, end = _utc(T0 + 18 * HOUR), _utc(T0 + 25 * HOUR)
    want = sorted(
        (r for r in _naive_rows(data_dir) if r["timeseriesId"] == sid and _in(r, start, end)),
        key=lambda r: r["windowStart"],
    )
    got = q.series_points(data_dir, sid, start, end, detector="shop")
    assert got.column("windowStart").to_pylist() == [r["windowStart"] for r in want]
    assert got.column("aggregatedMeasureValue").to_pylist() == [r["aggregatedMeasureValue"] for r in want]
    assert got.column("anomalyDecision").to_pylist() == [r["anomalyDecision"] for r in want]
    assert q.series_points(data_dir, EVIL, None, None).num_rows == 0


def test_anomalies_newest_first_filtered_and_sorted(data_dir: Path) -> None:
    rows = [r for r in _naive_rows(data_dir) if r["anomalyDecision"] == 1]
    assert len(rows) == 3
    got = q.anomalies(data_dir)
    assert got.column("windowStart").to_pylist() == sorted((r["windowStart"] for r in rows), reverse=True)
    by_score = q.anomalies(data_dir, order=[("anomalyScore", "asc")])
    assert by_score.column("anomalyScore").to_pylist() == sorted(r["anomalyScore"] for r in rows)
    high = q.anomalies(data_dir, filters=[q.Filter("anomalyScore", ">=", "94")])
    newest_first = sorted(rows, key=lambda r: r["windowStart"], reverse=True)
    assert high.column("anomalyScore").to_pylist() == [
        r["anomalyScore"] for r in newest_first if r["anomalyScore"] >= 94
    ]
    dims = q.anomalies(data_dir, filters=[q.Filter("dimensions", "contains", "DC=EU")])
    assert dims.column("dimensions").to_pylist() == ["dc=eu, host=h1"]
    assert q.anomalies(data_dir, filters=[q.Filter("measure", "=", EVIL)]).num_rows == 0
    after = q.anomalies(data_dir, filters=[q.Filter("windowStart", ">", "2026-01-01 21:00")])
    assert after.column("windowStart").to_pylist() == [_utc(T0 + 27 * HOUR)]
    assert q.anomalies(data_dir, start=_utc(T0 + 6 * HOUR), end=_utc(T0 + 21 * HOUR)).num_rows == 1
    assert q.anomalies(data_dir, limit=2).num_rows == 2


@pytest.mark.parametrize(
    "bad",
    [
        q.Filter("anomalyScore", ">", "abc"),
        q.Filter("anomalyScore", ">", "nan"),
        q.Filter("anomalyScore", "contains", "9"),
        q.Filter("measure", ">", "a"),
        q.Filter("anomalyScore; DROP TABLE results", "=", "1"),
        q.Filter("windowStart", "=", "yesterday"),
    ],
)
def test_malformed_filters_are_refused_with_a_message(data_dir: Path, bad: q.Filter) -> None:
    with pytest.raises(q.QueryInputError) as info:
        q.anomalies(data_dir, filters=[bad])
    assert str(info.value)


def test_sort_keys_come_from_the_whitelist(data_dir: Path) -> None:
    with pytest.raises(q.QueryInputError):
        q.anomalies(data_dir, order=[("anomalyScore DESC; DROP TABLE results", "asc")])
    with pytest.raises(q.QueryInputError):
        q.anomalies(data_dir, order=[("anomalyScore", "sideways")])


def test_hidden_and_foreign_files_are_not_read(data_dir: Path) -> None:
    before = q.kpis(data_dir)
    part = next((data_dir / "results").glob("detector=shop/date=*"))
    extra = result_table(detector="shop", measure="ghost", start_ms=T0, values=[1.0, 2.0])
    pq.write_table(extra, part / ".in-progress.parquet")  # a writer's temporary
    pq.write_table(extra, part / "notes.parquet.tmp")
    (part / "README").write_text("not a result")
    after = q.kpis(data_dir)
    assert (after["series"], after["windows"]) == (before["series"], before["windows"])
    assert "ghost" not in q.list_measures(data_dir)


def test_summary_cache_sees_a_new_file(data_dir: Path) -> None:
    before = q.kpis(data_dir)["windows"]
    more = result_table(
        detector="shop", measure="quantity", start_ms=T0 + 40 * HOUR, window_ms=HOUR, values=[1.0, 2.0, 3.0]
    )
    ParquetSink(data_dir).write(more, "events.9", 0, 2)
    assert q.kpis(data_dir)["windows"] == before + 3
    assert q.newest_window(data_dir) == _utc(T0 + 42 * HOUR)


def test_missing_or_empty_results_give_empty_frames(tmp_path: Path) -> None:
    for d in (tmp_path / "absent", tmp_path):
        assert q.kpis(d)["series"] == 0
        assert q.top_series(d).num_rows == 0
        assert q.search_series(d, None, None, "x", 5).num_rows == 0
        assert q.series_points(d, "abc").num_rows == 0
        assert q.anomalies(d).num_rows == 0
        assert q.newest_window(d) is None
        assert q.list_detectors(d) == []
        assert q.incidents(d).num_rows == 0
        assert q.worker_lag(d) is None
        assert q.run_sql(d, "SELECT count(*) AS n FROM results").column("n").to_pylist() == [0]


def test_run_sql_has_a_results_view_and_reports_errors(data_dir: Path) -> None:
    naive = _naive_rows(data_dir)
    out = q.run_sql(data_dir, "SELECT detector, count(*) AS n FROM results GROUP BY 1 ORDER BY 1")
    assert out.to_pylist() == [
        {"detector": "hosts", "n": sum(r["detectorName"] == "hosts" for r in naive)},
        {"detector": "shop", "n": sum(r["detectorName"] == "shop" for r in naive)},
    ]
    with pytest.raises(q.QueryError):
        q.run_sql(data_dir, "SELECT nope FROM results")
    # a user's SET stays in that call's own database
    q.run_sql(data_dir, "SET TimeZone = 'America/New_York'")
    assert q.newest_window(data_dir) == max(r["windowStart"] for r in naive)


def test_list_detectors_and_measures(data_dir: Path) -> None:
    assert q.list_detectors(data_dir) == ["hosts", "shop"]
    assert q.list_measures(data_dir, "shop") == ["price", "quantity"]


def test_incidents_come_from_the_real_alerts_outbox(tmp_path: Path) -> None:
    from sinks.alerts.service import AlertService, state_dir_for
    from sinks.config import AlertsConfig, WebhookConfig

    values = [10.0] * 8 + [500.0] + [10.0] * 3
    scores = [5.0] * 8 + [97.0] + [5.0] * 3
    table = result_table(
        detector="shop",
        dimensions={"product": "item-A"},
        start_ms=T0,
        window_ms=HOUR,
        values=values,
        scores=scores,
    )
    hooks = AlertsConfig(webhooks=(WebhookConfig(url="http://127.0.0.1:9/never-delivered"),))
    with AlertService({"shop": hooks}, state_dir_for(tmp_path)) as service:  # not started: no delivery
        service.observe(table, now=1_800_000_000.0)
    got = q.incidents(tmp_path).to_pylist()
    assert len(got) == 1
    assert got[0]["detector"] == "shop"
    assert got[0]["timeseriesId"] == table.column("timeseriesId")[0].as_py()
    assert got[0]["dimensions"] == "product=item-A"
    assert got[0]["peakScore"] == 97.0
    assert got[0]["openedAt"] == "2026-01-01 08:00:00"


def test_worker_lag_from_status_files_and_metrics(tmp_path: Path) -> None:
    import threading
    from wsgiref.simple_server import make_server

    status = tmp_path / "status"
    status.mkdir()
    (status / "w1.json").write_text(json.dumps({"lag_messages": 120, "lag_seconds": 1.5}))
    (status / "w2.json").write_text(json.dumps({"lag_messages": 30}))
    stale = status / "w3.json"
    stale.write_text(json.dumps({"lag_messages": 10_000}))
    old = stale.stat().st_mtime - 3600
    os.utime(stale, (old, old))
    assert q.worker_lag(tmp_path) == {
        "messages": 150.0,
        "seconds": 1.5,
        "latency_p99_s": None,
        "workers": 2,
        "stale": 0,
    }
    # a worker's own status file (cutstream worker --status-file) gives its result latency
    (status / "w4.json").write_text(json.dumps({"pid": 1, "events_in": 10, "latency_ms_p99": 250.0}))
    assert q.worker_lag(tmp_path) == {
        "messages": 150.0,
        "seconds": 1.5,
        "latency_p99_s": 0.25,
        "workers": 3,
        "stale": 0,
    }

    body = (
        b"# TYPE cutstream_consumer_lag gauge\n"
        b'cutstream_consumer_lag{topic="t",partition="0"} 7\n'
        b'cutstream_consumer_lag{topic="t",partition="1"} 5\n'
    )

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        lag = q.worker_lag(tmp_path / "nothing", [url, "http://127.0.0.1:1/metrics"])
        assert lag == {"messages": 12.0, "seconds": None, "latency_p99_s": None, "workers": 1, "stale": 0}
    finally:
        server.shutdown()
        server.server_close()


def test_series_absent_from_the_newest_flush_keep_their_identity(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    quiet = result_table(
        detector="d", dimensions={"k": "quiet"}, start_ms=T0, window_ms=HOUR, values=[1.0, 2.0]
    )
    busy = result_table(
        detector="d", dimensions={"k": "busy"}, start_ms=T0, window_ms=HOUR, values=[1.0, 2.0]
    )
    sink.write(pa.concat_tables([quiet, busy]), "src.0", 0, 3)
    later = result_table(
        detector="d", dimensions={"k": "busy"}, start_ms=T0 + 2 * HOUR, window_ms=HOUR, values=[5.0]
    )
    sink.write(later, "src.0", 4, 4)  # the newest file of that source holds only "busy"
    summary = q.series_summary(tmp_path)
    got = dict(
        zip(summary.column("dimensions").to_pylist(), summary.column("windows").to_pylist(), strict=True)
    )
    assert got == {"k=quiet": 2, "k=busy": 3}
    assert set(summary.column("detectorName").to_pylist()) == {"d"}
    assert q.search_series(tmp_path, "d", None, "quiet", 5).num_rows == 1


def test_cutstream_query_command(data_dir: Path) -> None:
    from click.testing import CliRunner

    from cutstream.cli import main

    runner = CliRunner()
    sql = "SELECT detector, count(*) AS n FROM results GROUP BY 1 ORDER BY 1"
    as_json = runner.invoke(main, ["query", sql, "--data-dir", str(data_dir), "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert [json.loads(line) for line in as_json.output.splitlines()] == [
        {"detector": "hosts", "n": 30},
        {"detector": "shop", "n": 90},
    ]
    as_csv = runner.invoke(main, ["query", sql, "--data-dir", str(data_dir), "--format", "csv"])
    assert as_csv.output.splitlines() == ['"detector","n"', '"hosts",30', '"shop",90']
    as_table = runner.invoke(main, ["query", sql, "--data-dir", str(data_dir)])
    assert "hosts" in as_table.output and "(2 rows)" in as_table.output
    bad = runner.invoke(main, ["query", "SELECT nope FROM results", "--data-dir", str(data_dir)])
    assert bad.exit_code == 1 and "nope" in bad.output and "Traceback" not in bad.output


def test_dashboard_view_turns_a_malformed_filter_into_a_message(data_dir: Path) -> None:
    from dashboard import views

    rows, message = views.anomaly_rows(data_dir, "all", "{anomalyScore} contains lots", None)
    assert rows == [] and message.startswith("Filter not applied") and "anomalyScore" in message
    rows, message = views.anomaly_rows(
        data_dir, "all", "{anomalyScore} >= 94", [{"column_id": "anomalyScore", "direction": "asc"}]
    )
    assert [r["anomalyScore"] for r in rows] == [94.0, 95.0] and message == ""


def test_files_without_the_explanation_columns_read_them_as_null(tmp_path: Path) -> None:
    """Parquet written before the record carried anomalyReason, valueScore and forestScore: the series
    and the anomaly table still read, with NULL there; next to newer files, those keep their values."""
    from sinks.parquet import file_name, partition_dir

    old_columns = [n for n in RESULT_SCHEMA.names if n not in ("anomalyReason", "valueScore", "forestScore")]
    scores = [10.0, 95.0, 20.0]
    old = result_table(start_ms=T0, window_ms=HOUR, values=[1.0, 9.0, 1.0], scores=scores).select(old_columns)
    folder = partition_dir(tmp_path, "shop", "2026-01-01")
    folder.mkdir(parents=True)
    pq.write_table(old, folder / file_name("events.0", 0, 2))
    sid = old.column("timeseriesId")[0].as_py()

    points = q.series_points(tmp_path, sid)
    assert points.column("anomalyScore").to_pylist() == scores
    assert points.column("anomalyReason").to_pylist() == [None] * 3
    assert points.column("valueScore").to_pylist() == [None] * 3
    (flagged,) = q.anomalies(tmp_path).to_pylist()
    assert flagged["anomalyScore"] == 95.0 and flagged["anomalyReason"] is None

    newer = result_table(start_ms=T0 + 3 * HOUR, window_ms=HOUR, values=[1.0, 9.0], scores=[5.0, 90.0])
    ParquetSink(tmp_path).write(newer, "events.0", 3, 4)
    points = q.series_points(tmp_path, sid)
    assert points.column("anomalyReason").to_pylist() == [None, None, None, "value", "value"]
    assert points.column("valueScore").to_pylist() == [None, None, None, 5.0, 90.0]
    reasons = q.anomalies(tmp_path, filters=[q.Filter("anomalyReason", "=", "value")]).to_pylist()
    assert [(r["anomalyScore"], r["valueScore"], r["forestScore"]) for r in reasons] == [(90.0, 90.0, 0.0)]
    from dashboard import views

    rows, _ = views.anomaly_rows(tmp_path, "all", None, None)
    assert [(r["anomalyScore"], r["anomalyReason"], r["valueScore"]) for r in rows] == [
        (90.0, "value", 90.0),  # newest first
        (95.0, "not recorded", None),
    ]


def _age(path: Path, seconds: float) -> None:
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))


def test_a_stopped_or_silent_worker_is_not_counted_as_running(tmp_path: Path) -> None:
    """'N worker(s) running' counts fresh status files only: a worker whose file is older than a few
    report intervals, or whose last write says it stopped, is stale (its figures are the last known)."""
    from dashboard import views

    status = tmp_path / "status"
    status.mkdir()
    running, silent, stopped = (status / f"{n}.json" for n in ("running", "silent", "stopped"))
    running.write_text(json.dumps({"latency_ms_p99": 100.0}))
    silent.write_text(json.dumps({"latency_ms_p99": 300.0}))
    _age(silent, q.WORKER_STALE_S + 5)  # killed: no last write, the file just stops changing
    stopped.write_text(json.dumps({"latency_ms_p99": 200.0, "stopped": True}))  # fresh, but said it stopped
    lag = q.worker_lag(tmp_path)
    assert lag is not None and (lag["workers"], lag["stale"], lag["latency_p99_s"]) == (1, 2, 0.3)
    value, note = views._lag_card(lag)
    assert value == "0.30 s" and "1 worker(s) running" in note and "2 stopped/stale" in note

    _age(running, q.WORKER_STALE_S + 5)
    lag = q.worker_lag(tmp_path)
    assert lag is not None and (lag["workers"], lag["stale"]) == (0, 3)
    assert "0 worker(s) running" in views._lag_card(lag)[1]
    # a worker within the limit is running; past STATUS_MAX_AGE_S a file is not read at all
    running.write_text(json.dumps({"latency_ms_p99": 100.0}))
    _age(running, q.WORKER_STALE_S - 5)
    for path in (silent, stopped):
        _age(path, q.STATUS_MAX_AGE_S)
    assert q.worker_lag(tmp_path) == {
        "messages": None,
        "seconds": None,
        "latency_p99_s": 0.1,
        "workers": 1,
        "stale": 0,
    }


def test_periods_end_at_the_newest_data_not_the_wall_clock(data_dir: Path) -> None:
    """The results lie in the past (a replayed demo): "last 24 hours" is the 24 h up to the newest
    window, so it is not empty, and it holds exactly the windows of those 24 hours."""
    from dashboard import views

    newest = _utc(T0 + 29 * HOUR)  # the fixture's last window
    assert newest < dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    period = views.resolve_period(data_dir, "24h")
    assert period == views.Period(newest - dt.timedelta(hours=24) + dt.timedelta(microseconds=1), None)
    want = [r for r in _naive_rows(data_dir) if _in(r, period.start, None)]
    assert {r["windowStart"] for r in want} == {_utc(T0 + h * HOUR) for h in range(6, 30)}
    k = q.kpis(data_dir, period.start, period.end)
    assert k["windows"] == len(want) > 0
    cards = {cid: text for cid, _, text, _ in views.kpi_values(data_dir, "24h")}
    assert cards["kpi-series"] == str(len({r["timeseriesId"] for r in want}))
    rows, _ = views.anomaly_rows(data_dir, "6h", None, None)  # hours 24-29 hold item-B's spike at 27
    assert [(r["dimensions"], r["windowStart"]) for r in rows] == [("product=item-B", "2026-01-02 03:00:00")]
    assert views.anomaly_rows(data_dir, "1h", None, None)[0] == []  # hour 29 alone: none
    assert views.resolve_period(data_dir, "all") == views.Period(None, None)
    assert views.resolve_period(data_dir, "no-such-period") == period  # the default, 24 h
    assert views.resolve_period(data_dir.parent / "empty", "24h") == views.Period(None, None)
