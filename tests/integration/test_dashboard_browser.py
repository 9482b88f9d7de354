"""The dashboard in real headless Chromium over the results of a real worker run on the embedded broker.

A worker scores three hosts' events (one spike injected) and writes Parquet; `cutstream dashboard`
serves that directory in a subprocess (waitress); Debian's chromium, driven by Playwright, picks the
spiked series by type-ahead, reads the plotly figure from the DOM, checks the anomaly marker sits
on the spike's window and that the table lists it, tries a malformed filter, clicks a row and saves
a screenshot to test-artifacts/.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_GROUP, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BASE_MS = 1_767_571_200_000  # 2026-01-05 00:00:00 UTC
WINDOW_MS = 60_000
N_WINDOWS = 120
SPIKE_WINDOW = 100
HOSTS = ("web-1", "web-2", "web-3", "web-4", "web-5")
SPIKE_HOST = "web-2"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _events() -> list[tuple[bytes, bytes]]:
    rng = random.Random(11)
    out = []
    for w in range(N_WINDOWS):
        for k, host in enumerate(HOSTS):
            base = 50.0 + 10 * k + 4.0 * math.sin(w / 6.0) + rng.uniform(-0.5, 0.5)
            if host == SPIKE_HOST and w == SPIKE_WINDOW:
                base *= 8
            for j in range(2):
                ts = BASE_MS + w * WINDOW_MS + 1_000 + 20_000 * j
                out.append(
                    (host.encode(), json.dumps({"ts": ts, "host": host, "latency_ms": base / 2}).encode())
                )
    return out


def _webhook_receiver() -> tuple[str, Any]:
    """A real HTTP endpoint that accepts the worker's alert webhooks (so its incidents are recorded)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    def app(environ: Any, start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("204 No Content", [])
        return []

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/hook", server


def _worker_run(bootstrap: str, topic: str, group: str, data_dir: Path, webhook: str) -> None:
    from confluent_kafka import Producer

    from cutstream.config import AppConfig
    from detector.config import ForestConfig, ModelConfig, ScoringConfig
    from sinks.config import AlertsConfig, WebhookConfig
    from streams.config import DetectorSpec, MeasureSpec, WorkerSettings
    from streams.worker import Worker

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value in _events():
        p.produce(topic, key=key, value=value)
    assert p.flush(10) == 0
    spec = DetectorSpec(
        name="web",
        topic=topic,
        timestamp_field="ts",
        dimensions=("host",),
        measures=(MeasureSpec(field="latency_ms", aggregation="sum", missing="skip"),),
        window_ms=WINDOW_MS,
        idle_timeout_ms=1_000,
        model=ModelConfig(
            forest=ForestConfig(n_trees=20, sample_size=32, shingle_size=1, seed=7),
            scoring=ScoringConfig(learning_points=16, learning_ms=0),
        ),
        alerts=AlertsConfig(webhooks=(WebhookConfig(url=webhook),)),
    )
    app = AppConfig(
        brokers=bootstrap,
        data_dir=data_dir,
        group_id=group,
        kafka=dict(FAST_GROUP),
        results_topic=f"{topic}.results",
        detectors=(spec,),
    )
    status = data_dir / "status" / "worker-1.json"  # where the dashboard looks for workers' status
    status.parent.mkdir(parents=True, exist_ok=True)
    worker = Worker(app, settings=WorkerSettings(status_file=str(status)))
    counters = worker.run_until_idle(idle_s=3.0, timeout_s=90)
    # the newest window of a series may stay open (no later event closes it): at least all others
    assert counters.results_written >= len(HOSTS) * (N_WINDOWS - 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    import httpx

    port = _free_port()
    log = data_dir.parent / f"dashboard-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cutstream",
                "dashboard",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--refresh-ms",
                "1000",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout_s=60, message="the dashboard to answer /healthz")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def results_dir(tansu_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results directory written by a real worker run (embedded broker, Parquet sink)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    data_dir = tmp_path_factory.mktemp("dash") / "data"
    topic = f"dash-e2e-{os.getpid()}"
    admin = AdminClient({"bootstrap.servers": tansu_broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(timeout=10)
    url, receiver = _webhook_receiver()
    try:
        _worker_run(str(tansu_broker.bootstrap), topic, f"g-dash-{os.getpid()}", data_dir, url)
    finally:
        receiver.shutdown()
        receiver.server_close()
    return data_dir


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


_FIGURE = (
    "() => { const g = document.querySelector('#chart .js-plotly-plot'); return g && g.data ? g : null; }"
)


def _trace_x(page: Any, name: str) -> list[str]:
    return list(
        page.evaluate(
            f"() => {{ const g = ({_FIGURE})();"
            f" const t = g && g.data.find(t => t.name === {json.dumps(name)});"
            " return t ? Array.from(t.x) : []; }"
        )
    )


def _value_point(page: Any, x: str) -> tuple[float, float]:
    """The page coordinates of the value trace's point at ``x`` (where a mouse hovers it)."""
    from dashboard import figures

    xy = page.evaluate(
        f"() => {{ const g = ({_FIGURE})();"
        # _fullData: y decoded (data holds numpy's arrays as base64 specs)
        f" const t = g._fullData.find(t => t.name === {json.dumps(figures.VALUE)});"
        f" const i = Array.from(t.x).indexOf({json.dumps(x)});"
        " const L = g._fullLayout, r = g.getBoundingClientRect();"
        " return [r.left + L.xaxis._offset + L.xaxis.d2p(t.x[i]),"
        " r.top + L.yaxis._offset + L.yaxis.d2p(t.y[i])]; }"
    )
    return float(xy[0]), float(xy[1])


def test_dashboard_shows_the_workers_spike(results_dir: Path, browser: Any) -> None:
    from dashboard import figures, views
    from sinks import query
    from sinks.record import format_period, timeseries_id

    spike_sid = timeseries_id("web", "latency_ms", {"host": SPIKE_HOST})
    spike_time = format_period(BASE_MS + SPIKE_WINDOW * WINDOW_MS)
    flagged = query.anomalies(results_dir).to_pylist()
    assert any(
        r["timeseriesId"] == spike_sid and r["detectionPeriodStartTime"] == spike_time for r in flagged
    ), f"precondition: the worker flags the spike; flagged: {flagged}"

    server = _serve(results_dir)
    url = next(server)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        # the page loads: KPIs filled, a chart drawn, the table filled
        page.wait_for_function(f"() => document.querySelector('#kpi-series')?.textContent === '{len(HOSTS)}'")
        # the worker's status file gives its result latency (it ran moments ago)
        assert (page.text_content("#kpi-lag") or "").endswith(" s")
        assert "window close → result" in (page.text_content("#kpis") or "")
        written = query.kpis(results_dir)["windows"]
        assert page.text_content("#kpi-points") == f"{written:,}"
        page.wait_for_function(f"() => {{ const g = ({_FIGURE})(); return g && g.data.length >= 7; }}")

        # select the spiked series by type-ahead
        page.click("#series")
        page.fill(".dash-dropdown-search", SPIKE_HOST)
        option = page.locator(".dash-dropdown-option", has_text=f"host={SPIKE_HOST}")
        option.first.wait_for()
        option.first.click()
        page.wait_for_function(
            f"() => document.querySelector('#chart .gtitle')?.textContent.includes('host={SPIKE_HOST}')"
        )

        # the chart's anomaly marker sits on the spike's window; the traces are all there
        wait_for(
            lambda: spike_time in _trace_x(page, figures.ANOMALY),
            timeout_s=20,
            message="the anomaly marker at the spike",
        )
        # hovering the spike's value reads what was expected, the band, the score and the confidence
        page.mouse.move(*_value_point(page, spike_time))
        page.wait_for_function(
            "() => (document.querySelector('#chart .hoverlayer')?.textContent || '').includes('confidence')"
        )
        tip = page.text_content("#chart .hoverlayer") or ""
        assert re.search(r"expected [\d.]+ \(band [-\d.]+ to [\d.]+\)", tip), tip
        assert re.search(r"score \d+\.\d, confidence \d+, INFERENCE", tip), tip
        # ... and why: the channel that carried the score and both channels' own scores
        why_line = r"why: (value|sustained|shift|forest), value channel [\d.]+, forest [\d.]+"
        assert re.search(why_line, tip), tip
        page.mouse.move(0, 0)
        names = page.evaluate(f"() => ({_FIGURE})().data.map(t => [t.name, t.yaxis || 'y'])")
        assert [figures.SCORE, "y2"] in names and [figures.THRESHOLD, "y2"] in names
        assert [figures.VALUE, "y"] in names and [figures.EXPECTED, "y"] in names
        assert [figures.HELD, "y"] in names

        # the table lists it, with why
        row = page.locator("#anomalies tbody tr", has_text=f"host={SPIKE_HOST}").filter(has_text=spike_time)
        row.first.wait_for()
        why = row.first.locator("td[data-dash-column='anomalyReason']").text_content() or ""
        assert why in ("value", "sustained", "shift", "forest"), why
        channel = row.first.locator("td[data-dash-column='valueScore']").text_content() or ""
        assert re.fullmatch(r"\d+(\.\d)?", channel.strip()), channel
        # the key explains the row's colour: the row is drawn like the swatch its score belongs to
        key = page.text_content("#table-key") or ""
        assert f"score ≥ {views.STRONG_SCORE}" in key and "forest:" in key and "held" in key
        score = float(row.first.locator("td[data-dash-column='anomalyScore']").text_content() or "nan")
        swatch = ".key-strong" if score >= views.STRONG_SCORE else ".key-plain"
        color = "el => getComputedStyle(el).color"
        cell = row.first.locator("td[data-dash-column='anomalyScore'] div").first
        assert cell.evaluate(color) == page.locator(f"#table-key {swatch}").evaluate(color)

        # a malformed filter value shows a message, not a stack trace
        score_filter = page.locator(
            "#anomalies th.dash-filter[data-dash-column='anomalyScore'] input[type=text]"
        )
        score_filter.fill("lots")
        score_filter.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#table-message').textContent.includes('score')"
            " || document.querySelector('#table-message').textContent.includes('Filter')"
        )
        message = page.text_content("#table-message") or ""
        assert "Filter not applied" in message and "Traceback" not in page.content()
        score_filter.fill("")
        score_filter.press("Enter")
        page.wait_for_function("() => document.querySelector('#table-message').textContent === ''")

        # a row click opens the series zoomed around that window
        row.first.locator("td").first.click()
        page.wait_for_function(
            f"() => {{ const g = ({_FIGURE})(); const r = g && g.layout.xaxis.range;"
            f" return r && r[0] < {json.dumps(spike_time)} && r[1] > {json.dumps(spike_time)}"
            " && g.layout.xaxis.autorange !== true; }"
        )

        # the incident the worker's alerting opened for the spike is listed
        page.locator("#incidents tbody tr", has_text=f"host={SPIKE_HOST}").filter(
            has_text=spike_time
        ).first.wait_for()

        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
        assert not errors, errors
    finally:
        server.close()


def test_live_refresh_keeps_the_selection(results_dir: Path, browser: Any, tmp_path: Path) -> None:
    """New results appear without a reload, and the user's series stays selected."""
    import shutil

    from sinks.parquet import ParquetSink
    from sinks.record import timeseries_id
    from sinks.testing import result_table

    data = tmp_path / "data"
    shutil.copytree(results_dir, data)
    server = _serve(data)
    url = next(server)
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(url)
        page.wait_for_function(f"() => document.querySelector('#kpi-series')?.textContent === '{len(HOSTS)}'")
        page.click("#series")
        page.fill(".dash-dropdown-search", "web-3")
        page.locator(".dash-dropdown-option", has_text="host=web-3").first.click()
        page.wait_for_function(
            "() => document.querySelector('#chart .gtitle')?.textContent.includes('web-3')"
        )
        # a worker writes a new series while the page is open
        extra = result_table(
            detector="web",
            measure="latency_ms",
            dimensions={"host": "web-9"},
            start_ms=BASE_MS + N_WINDOWS * WINDOW_MS,
            window_ms=WINDOW_MS,
            values=[1.0, 2.0],
        )
        ParquetSink(data).write(extra, "late.0", 0, 1)
        page.wait_for_function(
            f"() => document.querySelector('#kpi-series')?.textContent === '{len(HOSTS) + 1}'"
        )
        title = page.text_content("#chart .gtitle") or ""
        assert "web-3" in title
        assert page.evaluate("() => document.querySelector('#series-value').textContent").startswith(
            "host=web-3"
        )
        assert timeseries_id("web", "latency_ms", {"host": "web-3"})  # the selection is that series
    finally:
        server.close()


def test_token_is_required_off_loopback_and_checked_on_every_request(results_dir: Path, browser: Any) -> None:
    import httpx

    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "cutstream",
            "dashboard",
            "--data-dir",
            str(results_dir),
            "--host",
            "0.0.0.0",
            "--port",
            str(_free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "CUTSTREAM_DASHBOARD_TOKEN"},
    )
    assert refused.returncode != 0 and "token" in refused.stderr

    server = _serve(results_dir, env={"CUTSTREAM_DASHBOARD_TOKEN": "s3cret-token"})
    url = next(server)
    try:
        assert httpx.get(url + "/").status_code == 401
        assert httpx.get(url + "/_dash-layout").status_code == 401
        assert httpx.get(url + "/", auth=("anyone", "wrong")).status_code == 401
        assert httpx.get(url + "/", auth=("anyone", "s3cret-token")).status_code == 200
        assert (
            httpx.get(url + "/_dash-layout", headers={"Authorization": "Bearer s3cret-token"}).status_code
            == 200
        )
        context = browser.new_context(http_credentials={"username": "me", "password": "s3cret-token"})
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(f"() => document.querySelector('#kpi-series')?.textContent === '{len(HOSTS)}'")
        context.close()
    finally:
        server.close()


_CSP_LISTENER = (
    "window.__csp = [];"
    " document.addEventListener('securitypolicyviolation', e =>"
    " window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || '')));"
)


def test_the_page_renders_under_its_csp_and_cannot_be_framed(results_dir: Path, browser: Any) -> None:
    """Security headers on, the whole page still works: no CSP violation while it loads and is used;
    an inline script the page did not ship is blocked; a page elsewhere cannot frame it."""
    server = _serve(results_dir)
    url = next(server)
    try:
        context = browser.new_context(viewport={"width": 1300, "height": 900})
        page = context.new_page()
        page.add_init_script(_CSP_LISTENER)
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(url)
        assert response is not None
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        page.wait_for_function(f"() => document.querySelector('#kpi-series')?.textContent === '{len(HOSTS)}'")
        page.wait_for_function(f"() => {{ const g = ({_FIGURE})(); return g && g.data.length >= 7; }}")
        page.locator("#anomalies tbody tr td").first.wait_for()
        # use it: type-ahead pick, hover the chart, filter the table
        page.click("#series")
        page.fill(".dash-dropdown-search", "web-4")
        page.locator(".dash-dropdown-option", has_text="host=web-4").first.click()
        page.wait_for_function(
            "() => document.querySelector('#chart .gtitle')?.textContent.includes('web-4')"
        )
        page.hover("#chart .js-plotly-plot")
        score_filter = page.locator(
            "#anomalies th.dash-filter[data-dash-column='anomalyScore'] input[type=text]"
        )
        score_filter.fill("lots")
        score_filter.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#table-message').textContent.includes('Filter')"
        )
        assert page.evaluate("() => window.__csp") == []
        assert not [m for m in console if "Content Security Policy" in m], console
        assert not errors, errors

        # the listener and the policy work: an inline script the page did not ship does not run
        page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
            " document.body.appendChild(s); }"
        )
        wait_for(lambda: page.evaluate("() => window.__csp.length") > 0, message="the CSP violation")
        assert page.evaluate("() => window.__ran") is None
        assert page.evaluate("() => window.__csp[0]").startswith("script-src")

        # another page framing the dashboard gets an empty frame (frame-ancestors 'none')
        other = context.new_page()
        other.set_content(f"<iframe id='f' src='{url}/' onload=\"this.dataset.loaded = '1'\"></iframe>")
        other.wait_for_function("() => document.getElementById('f').dataset.loaded === '1'")
        framed = [f for f in other.frames if f != other.main_frame]
        assert framed and all("_dash-config" not in f.content() for f in framed), [f.url for f in framed]
        context.close()
    finally:
        server.close()
