"""A delivering process killed with SIGKILL mid-delivery: on restart nothing is lost, and a repeat
(only possible when the kill falls between the endpoint's acceptance and the outbox's delete)
carries the same de-duplication key and the same bytes, so the receiver can drop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from sinks.alerts import AlertService
from sinks.alerts.outbox import Outbox
from sinks.alerts.testing import WebhookReceiver
from sinks.config import AlertsConfig, WebhookConfig
from sinks.testing import result_table
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "crash-test-key-91b"

_CHILD = """
import sys, threading
from pathlib import Path
from sinks.alerts import AlertService
from sinks.config import AlertsConfig, DeliveryConfig, WebhookConfig
url, state, secret = sys.argv[1:4]
cfg = AlertsConfig(webhooks=(WebhookConfig(url=url, secret=secret, timeout_s=120),), cooldown_s=0)
svc = AlertService({"shop": cfg}, Path(state), DeliveryConfig(backoff_initial_s=0.05, backoff_max_s=0.2))
svc.start()
print("delivering", flush=True)
threading.Event().wait()
"""


def _worker(url: str, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(state), SECRET],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _rearm(rx: WebhookReceiver, key: str | None, after_accept: bool = False) -> None:
    old = rx.release
    rx.hold = (lambda p: p["dedupKey"] == key) if key else None
    rx.hold_after_accept = after_accept
    rx.held, rx.release = threading.Event(), threading.Event()
    old.set()


def test_sigkill_during_delivery_loses_nothing(tmp_path: Path) -> None:
    state = tmp_path / "alerts"
    with WebhookReceiver(secret=SECRET) as rx:
        cfg = AlertsConfig(webhooks=(WebhookConfig(url=rx.url, secret=SECRET),), cooldown_s=0)
        recorder = AlertService({"shop": cfg}, state)
        tables = [
            result_table(
                dimensions={"product_name": f"item-{i}"},
                values=[1.0, 9.0, 1.0, 1.0, 1.0],
                scores=[0.0, 99.0, 0.0, 0.0, 0.0],
            )
            for i in range(5)
        ]
        assert recorder.observe(pa.concat_tables(tables)) == 10
        keys = [r.dedup_key for r in recorder.pending()]
        recorder.outbox.close()

        # 1. Killed while the endpoint has not answered the 4th notification yet.
        _rearm(rx, keys[3])
        proc = _worker(rx.url, state)
        try:
            wait_for(rx.held.is_set, 60, message="4th notification in flight")
        finally:
            _kill(proc)
        assert list(rx.accepted) == keys[:3]

        # 2. Killed after the endpoint accepted the 7th but before the sender saw the answer.
        _rearm(rx, keys[6], after_accept=True)
        proc = _worker(rx.url, state)
        try:
            wait_for(rx.held.is_set, 60, message="7th notification accepted, answer in flight")
        finally:
            _kill(proc)
        assert list(rx.accepted) == keys[:7]

        # 3. A clean restart delivers the rest.
        _rearm(rx, None)
        proc = _worker(rx.url, state)
        try:
            wait_for(
                lambda: set(rx.accepted) == set(keys) and not Outbox(state).pending(),
                60,
                message="outbox drained",
            )
        finally:
            _kill(proc)

    # Nothing lost; every key accepted once, except the one whose acceptance the sender never saw.
    assert {k: n for k, n in rx.accepted.items() if n != 1} == {keys[6]: 2}
    repeats = [p for k, s, p in rx.requests if k == keys[6] and s == 200]
    assert len(repeats) == 2 and repeats[0] == repeats[1]  # same key, same payload: the receiver dedups
    # The notification in flight at the first kill was sent again and accepted once.
    assert [s for k, s, _ in rx.requests if k == keys[3]] == [-1, 200]
    assert rx.bad_signatures == 0
    # Order is kept per endpoint across restarts: accepted keys (first acceptance) follow recording order.
    firsts = list(dict.fromkeys(k for k, s, _ in rx.requests if s == 200))
    assert firsts == keys
