"""`cutstream dashboard` in a subprocess (waitress), asked over real HTTP: the Host allowlist (DNS
rebinding), the security headers, malformed callback requests (4xx, never 500) and a 100 KB filter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]

_COMMAND = (sys.executable, "-m", "cutstream", "dashboard")
BASE_MS = 1_767_571_200_000  # 2026-01-05 00:00:00 UTC
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two series' results written by the real Parquet sink; one window of web-2 is anomalous."""
    from sinks.parquet import ParquetSink
    from sinks.testing import result_table

    root = tmp_path_factory.mktemp("dash-http") / "data"
    sink = ParquetSink(root)
    for k, host in enumerate(("web-1", "web-2")):
        values = [10.0 + k] * 30
        scores = [5.0] * 30
        if host == "web-2":
            values[20], scores[20] = 90.0, 95.0
        table = result_table(
            detector="web",
            measure="latency_ms",
            dimensions={"host": host},
            start_ms=BASE_MS,
            values=values,
            scores=scores,
        )
        sink.write(table, f"events.{k}", 0, len(values) - 1)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = _free_port()
    log = data_dir.parent / f"dashboard-{port}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUTSTREAM_DASHBOARD_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*_COMMAND, "--data-dir", str(data_dir), "--port", str(port), "--refresh-ms", "600000", *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
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
def server(data_dir: Path) -> Iterator[str]:
    """The dashboard as a user starts it: loopback, no token, no --allowed-host."""
    yield from _serve(data_dir)


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


def _get(url: str, path: str, host: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Host": host} if host is not None else {}
    return httpx.get(url + path, headers=headers, timeout=30, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Host allowlist


def test_a_dns_rebinding_request_is_refused(server: str) -> None:
    """A page on evil.example whose name now points at 127.0.0.1: its requests carry its own Host."""
    for path in ("/", "/_dash-layout", "/_dash-dependencies", "/no-such-page"):
        r = _get(server, path, host=f"evil.example:{_port(server)}")
        assert r.status_code == 400, (path, r.status_code)
        assert r.text.startswith("unknown Host") and r.text.count("\n") == 1
        assert "evil.example" not in r.text  # the refusal does not echo the name
    posted = httpx.post(
        server + "/_dash-update-component",
        headers={"Host": "evil.example"},
        json=_table_request(""),
        timeout=30,
    )
    assert posted.status_code == 400 and posted.text.startswith("unknown Host")
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "", "localhost:x"):
        assert _get(server, "/", host=host).status_code == 400, host
    # /healthz answers any Host (probes use the pod's address) and tells nothing about the data
    assert _get(server, "/healthz", host="evil.example").text == "ok\n"


def test_the_loopback_names_are_answered(server: str) -> None:
    port = _port(server)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "LocalHost."):
        r = _get(server, "/", host=host)
        assert r.status_code == 200, host
        assert "_dash-config" in r.text
    assert _get(server, "/_dash-layout").json()["type"] == "Div"


def test_allowed_host_adds_names_and_a_token_does_not_lift_the_allowlist(data_dir: Path) -> None:
    served = _serve(
        data_dir,
        "--allowed-host",
        "dash.example.com",
        "--allowed-host",
        "*.corp.example",
        env={"CUTSTREAM_DASHBOARD_TOKEN": "s3cret-token"},
    )
    url = next(served)
    try:
        auth = {"Authorization": "Bearer s3cret-token"}
        ok = httpx.get(url + "/", headers={"Host": "dash.example.com:8443", **auth}, timeout=30)
        assert ok.status_code == 200 and "_dash-config" in ok.text
        assert httpx.get(url + "/", headers={"Host": "a.corp.example", **auth}).status_code == 200
        # the token alone does not make another name acceptable, nor the name the token unnecessary
        assert httpx.get(url + "/", headers={"Host": "evil.example", **auth}).status_code == 400
        assert httpx.get(url + "/", headers={"Host": "corp.example", **auth}).status_code == 400
        assert httpx.get(url + "/", headers={"Host": "dash.example.com"}).status_code == 401
    finally:
        served.close()


def test_the_environment_lists_names_and_star_widens_to_any(data_dir: Path) -> None:
    served = _serve(data_dir, env={"CUTSTREAM_DASHBOARD_ALLOWED_HOSTS": "dash.example.com, 10.0.0.7"})
    url = next(served)
    try:
        assert _get(url, "/", host="dash.example.com").status_code == 200
        assert _get(url, "/", host="10.0.0.7:8050").status_code == 200
        assert _get(url, "/", host="evil.example").status_code == 400
    finally:
        served.close()
    served = _serve(data_dir, "--allowed-host", "*")
    url = next(served)
    try:
        assert _get(url, "/", host="evil.example").status_code == 200
    finally:
        served.close()


def test_a_bad_allowed_host_is_one_line_not_a_traceback(data_dir: Path) -> None:
    done = subprocess.run(
        [*_COMMAND, "--data-dir", str(data_dir), "--port", str(_free_port()), "--allowed-host", "dash/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--allowed-host" in done.stderr and "'dash/x' is not a host name" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------------
# Security headers


def test_every_response_carries_the_security_headers(server: str) -> None:
    page = _get(server, "/")
    scripts = [
        line.split('src="', 1)[1].split('"', 1)[0]
        for line in page.text.splitlines()
        if "<script src=" in line
    ]
    assert scripts, "the page names its scripts"
    responses = {
        "page": page,
        "script": _get(server, scripts[0]),
        "layout": _get(server, "/_dash-layout"),
        "callback": httpx.post(server + "/_dash-update-component", json=_table_request(""), timeout=30),
        "malformed callback": httpx.post(server + "/_dash-update-component", content=b"{", timeout=30),
        "not found": _get(server, "/no-such-page/x.js"),
        "unknown host": _get(server, "/", host="evil.example"),
        "health": _get(server, "/healthz"),
    }
    assert responses["script"].headers["content-type"].split(";")[0] in (
        "application/javascript",
        "text/javascript",
    ), "nosniff needs scripts served as JavaScript"
    for name, r in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert r.headers.get(header) == value, (name, header, r.headers.get(header))
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, name
        script_src = next(d for d in csp.split("; ") if d.startswith("script-src "))
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        assert "'sha256-" in script_src  # Dash's own inline scripts, by hash
    assert responses["callback"].status_code == 200


# ---------------------------------------------------------------------------------------------------
# Malformed callback requests


def _table_request(filter_query: Any, sort_by: Any = None, **overrides: Any) -> dict[str, Any]:
    """What the page posts when the anomaly table's filter changes."""
    body: dict[str, Any] = {
        "output": "..anomalies.data...table-message.children..",
        "outputs": [
            {"id": "anomalies", "property": "data"},
            {"id": "table-message", "property": "children"},
        ],
        "inputs": [
            {"id": "period", "property": "value", "value": "all"},
            {"id": "anomalies", "property": "filter_query", "value": filter_query},
            {"id": "anomalies", "property": "sort_by", "value": sort_by},
            {"id": "tick", "property": "n_intervals", "value": 0},
        ],
        "changedPropIds": ["anomalies.filter_query"],
        "state": [{"id": "anomalies", "property": "data", "value": None}],
    }
    body.update(overrides)
    return body


def _chart_request(series: Any, period: Any = "all", focus: Any = None, tick: Any = 0) -> dict[str, Any]:
    return {
        "output": "..chart.figure...chart-key.data..",
        "outputs": [{"id": "chart", "property": "figure"}, {"id": "chart-key", "property": "data"}],
        "inputs": [
            {"id": "series", "property": "value", "value": series},
            {"id": "period", "property": "value", "value": period},
            {"id": "focus", "property": "data", "value": focus},
            {"id": "tick", "property": "n_intervals", "value": tick},
        ],
        "changedPropIds": ["series.value"],
        "state": [{"id": "chart-key", "property": "data", "value": None}],
    }


def _web2() -> str:
    from sinks.record import timeseries_id

    return timeseries_id("web", "latency_ms", {"host": "web-2"})


def _inputs(body: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    return {**body, "inputs": [{**i, "value": v} for i, v in zip(body["inputs"], values, strict=True)]}


MALFORMED: dict[str, Any] = {
    "not JSON": b'{"output": ',
    "JSON, not an object": b"[1, 2, 3]",
    "an empty object": {},
    "output not a string": {**_table_request(""), "output": ["anomalies.data"]},
    "unknown output id": {**_table_request(""), "output": "nothing.children"},
    "a clientside callback": {
        "output": "tick.disabled",
        "outputs": {"id": "tick", "property": "disabled"},
        "inputs": [{"id": "live", "property": "value", "value": []}],
        "changedPropIds": [],
    },
    "inputs missing": {k: v for k, v in _table_request("").items() if k != "inputs"},
    "inputs not a list": {**_table_request(""), "inputs": "period"},
    "an input too few": {**_table_request(""), "inputs": _table_request("")["inputs"][:3]},
    "unknown input id": {
        **_table_request(""),
        "inputs": [{"id": "nope", "property": "value", "value": 1}, *_table_request("")["inputs"][1:]],
    },
    "inputs not objects": {**_table_request(""), "inputs": [1, 2, 3, 4]},
    "state missing": {**_table_request(""), "state": []},
    "outputs wrong": {**_table_request(""), "outputs": [{"id": "kpis", "property": "children"}]},
    "changedPropIds not a list": {**_table_request(""), "changedPropIds": "anomalies.filter_query"},
    "filter a number": _table_request(12),
    "filter an object": _table_request({"$ne": 1}),
    "sort_by a string": _table_request("", sort_by="anomalyScore"),
    "sort_by entries not objects": _table_request("", sort_by=["anomalyScore"]),
    "sort direction unknown": _table_request("", sort_by=[{"column_id": "anomalyScore", "direction": "up"}]),
    "sort_by absurdly long": _table_request("", sort_by=[{"column_id": "anomalyScore"}] * 10_000),
    "period a list": _chart_request(None, period=["24h"]),
    "period absurdly long": _chart_request(None, period="9" * 10_000 + "d"),
    "series a number": _chart_request(12345),
    "series an object": _chart_request({"id": 1}),
    "series not hex": _chart_request("'; DROP TABLE results; --"),
    "focus a string": _chart_request(_web2(), focus="2026-01-05"),
    "focus time a number": _chart_request(_web2(), focus={"series": _web2(), "time": 1e308}),
    "n_intervals negative": _chart_request(None, tick=-1),
    "n_intervals a string": _chart_request(None, tick="1"),
    "n_intervals a bool": _chart_request(None, tick=True),
    "table state not rows": {
        **_table_request(""),
        "state": [{"id": "anomalies", "property": "data", "value": "rows"}],
    },
    "active_cell a list": "built by _open_series_request",
}


def _open_series_request(data_dir: Path, cell: Any) -> dict[str, Any]:
    """The row-click callback's request; its output key carries Dash's hash of a duplicate output."""
    from dashboard.app import create_app

    key = next(k for k in create_app(data_dir).callback_map if k.startswith("..series.value@"))
    return {
        "output": key,
        "outputs": [{"id": "series", "property": "value"}, {"id": "focus", "property": "data"}],
        "inputs": [
            {"id": "anomalies", "property": "active_cell", "value": cell},
            {"id": "incidents", "property": "active_cell", "value": None},
            {"id": "url", "property": "search", "value": ""},
        ],
        "changedPropIds": ["anomalies.active_cell"],
    }


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_callback_request_gets_4xx(server: str, data_dir: Path, case: str) -> None:
    body = MALFORMED[case] if case != "active_cell a list" else _open_series_request(data_dir, [1, 2])
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(
        server + "/_dash-update-component",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:300])
    assert "Traceback" not in r.text


def test_oversized_and_non_json_bodies_get_4xx(server: str) -> None:
    big = httpx.post(
        server + "/_dash-update-component",
        content=b'{"output": "' + b"a" * (5 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert big.status_code == 413
    form = httpx.post(server + "/_dash-update-component", data={"output": "x"}, timeout=30)
    assert form.status_code == 400


def test_well_formed_requests_still_answer_and_absurd_ranges_are_not_errors(
    server: str, data_dir: Path
) -> None:
    """The same endpoint answers the page's own requests: the 4xx above are about the input."""
    sid = _web2()
    chart = httpx.post(server + "/_dash-update-component", json=_chart_request(sid), timeout=30)
    assert chart.status_code == 200 and "host=web-2" in chart.text
    # an alert link (a user can edit it) with times at the ends of the calendar: drawn, not a 500
    for focus in (
        {"series": sid, "time": "0001-01-01 00:00:00"},
        {"series": sid, "start": "0001-01-01T00:00:00+05:00", "end": "9999-12-31T23:59:59"},
        {"series": sid, "time": "not a time"},
    ):
        r = httpx.post(server + "/_dash-update-component", json=_chart_request(sid, focus=focus), timeout=30)
        assert r.status_code == 200, (focus, r.text[:300])
    row_click = {"row": 0, "column": 0, "column_id": "windowStart", "row_id": f"{sid}@2026-01-05 00:20:00"}
    opened = httpx.post(server + "/_dash-update-component", json=_open_series_request(data_dir, row_click))
    assert opened.status_code == 200 and opened.json()["response"]["series"]["value"] == sid
    table = httpx.post(server + "/_dash-update-component", json=_table_request("{anomalyScore} > 90"))
    assert table.status_code == 200
    rows = table.json()["response"]["anomalies"]["data"]
    assert [r["dimensions"] for r in rows] == ["host=web-2"]
    # an unknown period name is the default period, a user's malformed filter is a message
    bad_filter = httpx.post(server + "/_dash-update-component", json=_table_request("{anomalyScore} > lots"))
    assert bad_filter.status_code == 200
    assert "Filter not applied" in bad_filter.json()["response"]["table-message"]["children"]


def test_a_100kb_filter_is_answered_with_a_message(server: str) -> None:
    text = "{dimensions} contains a" + " " * 100_000 + "b"
    r = httpx.post(server + "/_dash-update-component", json=_table_request(text), timeout=30)
    assert r.status_code == 200
    response = r.json()["response"]
    assert response["anomalies"]["data"] == []
    assert response["table-message"]["children"] == (
        "Filter not applied: the filter is 100,024 characters long; the table reads at most 4,096"
    )
