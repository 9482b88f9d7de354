"""The worker's metrics and health endpoints, over a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import MetricsError, WorkerMetrics

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_metrics_healthz_and_readyz_over_http() -> None:
    clock = FakeClock()
    m = WorkerMetrics(CollectorRegistry(), liveness_timeout_s=5, clock=clock)
    m.events_in(12)
    m.dead_lettered("bad_timestamp", 3)
    with m.serve(0) as server, httpx.Client(base_url=server.url, timeout=5) as http:
        r = http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text)
            for s in fam.samples
        }
        assert values[("cutstream_events_total", ())] == 12
        assert values[("cutstream_dead_lettered_total", (("reason", "bad_timestamp"),))] == 3

        assert http.get("/healthz").status_code == 200
        r = http.get("/readyz")
        assert r.status_code == 503 and r.json()["reason"] == "starting"

        m.set_ready(True)
        assert http.get("/readyz").json() == {"status": "ok", "last_tick_age_s": 0.0, "reason": ""}

        clock.now += 6  # the loop stalls
        r = http.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "fail"
        assert http.get("/readyz").status_code == 503
        m.tick()
        assert http.get("/healthz").status_code == 200
        assert http.get("/nope").status_code == 404


def test_close_releases_the_port() -> None:
    m = WorkerMetrics(CollectorRegistry())
    server = m.serve(0)
    port = server.port
    server.close()
    with socket.socket() as s:  # binds only if the server really let go of it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_taken_port_raises_an_error_that_names_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MetricsError, match=str(port)):
            WorkerMetrics(CollectorRegistry()).serve(port)
