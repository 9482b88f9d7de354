"""Webhooks against a real HTTP server: signature, 500s, 429 + Retry-After, then each key exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from sinks.alerts import AlertService
from sinks.alerts.hooks import DEDUP_HEADER, SIGNATURE_HEADER, verify_signature
from sinks.alerts.testing import WebhookReceiver
from sinks.config import AlertsConfig, DeliveryConfig, WebhookConfig
from sinks.testing import result_table
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SECRET = "whsec-7f3a9c1e5b2d"


def _plan(n: int) -> tuple[int, dict[str, str]]:
    if n <= 2:
        return 500, {}
    if n == 3:
        return 429, {"Retry-After": "1"}
    return 200, {}


def _incidents(n_series: int) -> pa.Table:
    tables = []
    for i in range(n_series):
        scores = [0.0, 0.0, 96.0, 97.0, 10.0, 10.0, 10.0]
        tables.append(
            result_table(
                dimensions={"product_name": f"item-{i}", "region": "eu"},
                values=[10.0, 11.0, 90.0, 95.0, 10.0, 9.0, 10.0],
                expected=[10.0] * 7,
                scores=scores,
            )
        )
    return pa.concat_tables(tables)


def test_each_alert_arrives_exactly_once_through_errors_and_throttling(tmp_path: Path) -> None:
    fast = DeliveryConfig(backoff_initial_s=0.05, backoff_max_s=0.2)
    with (
        WebhookReceiver(secret=SECRET, plan=_plan) as rx,
        WebhookReceiver(secret="a-different-key-123") as wrong_key,
    ):
        cfg = AlertsConfig(
            webhooks=(
                WebhookConfig(url=rx.url, secret=SECRET, timeout_s=2),
                WebhookConfig(url=wrong_key.url, secret=SECRET, timeout_s=2),
            ),
            dashboard_url="http://dash.example:8050",
            cooldown_s=0,
        )
        svc = AlertService({"shop": cfg}, tmp_path, fast, seed=1)
        svc.observe(_incidents(3))
        expected = {r.dedup_key for r in svc.pending()}
        assert len(expected) == 3 * 3  # per series: open, update, resolve
        svc.start()
        try:
            wait_for(lambda: set(rx.accepted) == expected, 30, message="every key accepted")
            wait_for(lambda: wrong_key.bad_signatures >= 2, 30, message="retries to the wrong-key endpoint")
        finally:
            svc.stop()

    # Exactly once per de-dup key, though the endpoint failed 500, 500, 429 first.
    assert sorted(rx.accepted.values()) == [1] * len(expected)
    statuses = [s for _, s, _ in rx.requests]
    assert statuses[:3] == [500, 500, 429] and rx.bad_signatures == 0
    # Retry-After: 1 was honoured.
    assert rx.times[3] - rx.times[2] >= 0.95
    # Per series, notifications arrive in lifecycle order.
    accepted = [p for _, s, p in rx.requests if s == 200]
    for i in range(3):
        kinds = [p["event"] for p in accepted if p["dimensions"]["product_name"] == f"item-{i}"]
        assert kinds == ["open", "update", "resolve"]
    # The payload carries what a receiver needs to act.
    first = next(p for p in accepted if p["event"] == "open")
    assert first["detector"] == "shop" and first["measure"] == "quantity"
    assert first["dimensions"] == {"product_name": first["dimensions"]["product_name"], "region": "eu"}
    assert first["window"] == {"start": "2024-05-01 00:02:00", "end": "2024-05-01 00:03:00"}
    assert (first["actual"], first["expected"], first["score"]) == (90.0, 10.0, 96.0)
    assert first["threshold"] == 70.0 and first["confidence"] == 90.0
    assert first["dashboardUrl"].startswith("http://dash.example:8050/?detector=shop&series=")
    assert first["timeseriesId"] in first["dashboardUrl"]
    assert first["dedupKey"] in expected
    # The endpoint that rejects the signature (401: permanent) loses nothing either: each notification
    # is still in the outbox or, after max_permanent_rejections (3) refusals, in the dead letters.
    wrong_hook = svc._detector_hooks["shop"][1]
    left, dead = svc.pending(), svc.dead_letters()
    assert {r.hook for r in left} <= {wrong_hook} and {d.hook for d in dead} <= {wrong_hook}
    assert {r.dedup_key for r in left} | {d.dedup_key for d in dead} == expected
    assert len(left) + len(dead) == len(expected)
    error = f"HTTP 401 from {wrong_key.url.rsplit('/', 1)[0]}"
    assert all(r.last_error == error and r.rejections == r.attempts for r in left if r.attempts)
    assert all((d.last_error, d.attempts, d.rejections, d.reason) == (error, 3, 3, "rejected") for d in dead)
    assert wrong_key.bad_signatures == 3 * len(dead) + sum(r.attempts for r in left)


def test_a_captured_request_replayed_after_the_tolerance_is_refused(tmp_path: Path) -> None:
    """The receiver (WebhookReceiver) checks signatures with verify_signature, as a receiver would."""
    skew = [0.0]  # how far ahead the receiver's clock is of the real one
    with WebhookReceiver(secret=SECRET, tolerance_s=300, clock=lambda: time.time() + skew[0]) as rx:
        cfg = AlertsConfig(webhooks=(WebhookConfig(url=rx.url, secret=SECRET),), cooldown_s=0)
        svc = AlertService({"shop": cfg}, tmp_path, DeliveryConfig(), seed=1)
        svc.observe(result_table(values=[1.0, 50.0], scores=[0.0, 99.0]))
        assert svc.deliver_pending() == 1  # fresh: verified
        svc.stop()
        ((headers, body),) = rx.raw
        signature = headers[SIGNATURE_HEADER]
        stamp = int(signature.split(",")[0].removeprefix("t="))
        assert abs(stamp - time.time()) < 60 and f"t={stamp},v1=" in signature

        def replay() -> int:
            return httpx.post(rx.url, content=body, headers=headers, timeout=5).status_code

        skew[0] = 301.0  # the captured request, replayed 301 s later: refused
        assert replay() == 401 and rx.bad_signatures == 1
        skew[0] = 0.0  # within the tolerance the signature holds; the receiver drops the seen key
        assert replay() == 200 and rx.accepted[headers[DEDUP_HEADER]] == 2
    # As a receiver runs it, on the captured bytes:
    assert verify_signature(SECRET, signature, body, now=stamp + 299)
    assert not verify_signature(SECRET, signature, body, now=stamp + 301)
    assert not verify_signature(SECRET, signature, body, now=stamp - 301)  # from the future
    assert not verify_signature(SECRET, signature, body + b" ", now=stamp)  # body changed
    assert not verify_signature("another-key-4f2a", signature, body, now=stamp)
    forged = signature.replace(f"t={stamp}", f"t={stamp + 600}")  # a fresh time, the old MAC
    assert not verify_signature(SECRET, forged, body, now=stamp + 600)
