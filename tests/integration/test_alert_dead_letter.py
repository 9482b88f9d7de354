"""Permanent refusals end in the outbox's dead letters; transient failures keep being retried.

Real servers (a loopback HTTP server, aiosmtpd); delivery is driven by ``deliver_pending(now=...)``
with a virtual clock, so every retry is due exactly when the test says and nothing sleeps.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from cutstream.cli import main
from sinks.alerts import AlertService, state_dir_for
from sinks.alerts.hooks import EmailHook, WebhookHook
from sinks.alerts.outbox import SCHEMA_VERSION, Outbox, db_path, read_outbox
from sinks.alerts.testing import Plan, SmtpReceiver, WebhookReceiver, always_ok
from sinks.config import AlertsConfig, DeliveryConfig, EmailConfig, WebhookConfig
from sinks.testing import result_table
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0  # the virtual clock's start (recording time of every notification below)
TOKEN = "tok-9d8c7b6a5f"  # a token in the webhook URL: must never reach a log line


def _delivery(**settings: float) -> DeliveryConfig:
    """Retries due a few hundredths of a second later: the virtual clock steps 10 s per round."""
    return DeliveryConfig(backoff_initial_s=0.01, backoff_max_s=0.05, **settings)


def _incident() -> pa.Table:
    """One series, one incident: an ``open`` and a ``resolve`` notification, in that order."""
    return result_table(values=[1.0, 9.0, 1.0, 1.0, 1.0], scores=[0.0, 99.0, 0.0, 0.0, 0.0])


def _status(code: int) -> Plan:
    """Always answer ``code``."""
    return lambda _n: (code, {})


def _rounds(svc: AlertService, n: int, start: float = T0) -> float:
    """``n`` delivery passes, 10 virtual seconds apart (every retry is due at each); the last time."""
    t = start
    for i in range(n):
        t = start + 10.0 * (i + 1)
        svc.deliver_pending(now=t)
    return t


def test_404_is_dead_lettered_after_the_configured_rejections_while_503_keeps_retrying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        WebhookReceiver(plan=_status(404)) as gone,
        WebhookReceiver(plan=_status(503)) as down,
    ):
        cfg = AlertsConfig(
            webhooks=(WebhookConfig(url=f"{gone.url}?token={TOKEN}"), WebhookConfig(url=down.url)),
            cooldown_s=0,
        )
        svc = AlertService({"shop": cfg}, tmp_path, _delivery(max_permanent_rejections=3), seed=1)
        assert svc.observe(_incident(), now=T0) == 4  # (open, resolve) × 2 hooks
        gone_hook, down_hook = svc._detector_hooks["shop"]
        open_key, resolve_key = (r.dedup_key for r in svc.pending() if r.hook == gone_hook)

        # Round 1 and 2: one 404 each for the open (the resolve waits behind it, in order).
        _rounds(svc, 2)
        assert [k for k, _, _ in gone.requests] == [open_key] * 2 and svc.dead_letters() == []
        # Round 3: the third 404 dead-letters the open; the resolve goes at once, and is refused.
        t = _rounds(svc, 1, start=T0 + 20)
        (dead_open,) = svc.dead_letters()
        assert (dead_open.dedup_key, dead_open.hook, dead_open.kind) == (open_key, gone_hook, "open")
        assert (dead_open.attempts, dead_open.rejections, dead_open.reason) == (3, 3, "rejected")
        assert dead_open.dead_at == t and dead_open.created_at == T0
        assert dead_open.last_error == f"HTTP 404 from {gone.url.rsplit('/', 1)[0]}"
        assert [k for k, _, _ in gone.requests] == [open_key] * 3 + [resolve_key]
        # Many more rounds: the resolve dies after its third 404, and nothing dead is ever sent again.
        _rounds(svc, 20, start=t)
        assert Counter(k for k, _, _ in gone.requests) == {open_key: 3, resolve_key: 3}
        assert [d.dedup_key for d in svc.dead_letters()] == [open_key, resolve_key]
        assert svc.dead_lettered_total == 2 and svc.dead_letter_count() == 2

        # The 503 endpoint: retried at every round (23), never dead-lettered, the resolve behind it.
        assert [k for k, _, _ in down.requests] == [open_key] * 23
        (waiting, behind) = svc.pending()
        assert (waiting.hook, waiting.attempts, waiting.rejections) == (down_hook, 23, 0)
        assert (behind.dedup_key, behind.attempts) == (resolve_key, 0)
        assert all(d.hook == gone_hook for d in svc.dead_letters())
        svc.stop()

    # Each dead letter is logged once at ERROR, with the key and the host, never the URL's token.
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("dead-lettered" in m and "--requeue-dead" in m for m in errors)
    assert open_key in errors[0] and resolve_key in errors[1] and "reason=rejected" in errors[0]
    assert TOKEN not in caplog.text
    raw = db_path(tmp_path).read_bytes().decode("latin-1")
    assert TOKEN not in raw


def test_transient_failures_do_not_count_as_rejections(tmp_path: Path) -> None:
    # 503, 404, 429, 404, 500, 404: the third 404 (sixth attempt) is the one that dead-letters.
    codes = [503, 404, 429, 404, 500, 404, 200]
    with WebhookReceiver(plan=lambda n: (codes[n - 1], {})) as rx:
        cfg = AlertsConfig(webhooks=(WebhookConfig(url=rx.url),), cooldown_s=0)
        svc = AlertService({"shop": cfg}, tmp_path, _delivery(), seed=1)
        svc.observe(_incident(), now=T0)
        _rounds(svc, 5)
        (row, _) = svc.pending()
        assert (row.attempts, row.rejections) == (5, 2) and svc.dead_letters() == []
        _rounds(svc, 1, start=T0 + 50)
        (dead,) = svc.dead_letters()
        assert (dead.attempts, dead.rejections) == (6, 3)
        svc.stop()
    # The resolve, tried right after in the same pass, got the 7th answer (200).
    assert [s for _, s, _ in rx.requests] == codes and len(rx.accepted) == 1


def test_give_up_after_s_dead_letters_a_row_still_failing_at_that_age(tmp_path: Path) -> None:
    with WebhookReceiver(plan=_status(503)) as rx:
        cfg = AlertsConfig(webhooks=(WebhookConfig(url=rx.url),), cooldown_s=0)
        svc = AlertService({"shop": cfg}, tmp_path, _delivery(give_up_after_s=60), seed=1)
        svc.observe(_incident(), now=T0)
        svc.deliver_pending(now=T0 + 59)
        assert svc.dead_letters() == [] and svc.pending()[0].attempts == 1
        svc.deliver_pending(now=T0 + 60)  # the open dies; the resolve (same age) is tried and dies too
        assert [(d.kind, d.reason, d.attempts, d.rejections) for d in svc.dead_letters()] == [
            ("open", "expired", 2, 0),
            ("resolve", "expired", 1, 0),
        ]
        assert svc.pending() == [] and len(rx.requests) == 3
        svc.stop()
    # With the default (0 = never) the same endpoint is retried however old the row is.
    with WebhookReceiver(plan=_status(503)) as rx:
        cfg = AlertsConfig(webhooks=(WebhookConfig(url=rx.url),), cooldown_s=0)
        svc = AlertService({"shop": cfg}, tmp_path / "default", _delivery(), seed=1)
        svc.observe(_incident(), now=T0)
        svc.deliver_pending(now=T0 + 30 * 86400.0)
        assert svc.dead_letters() == [] and svc.pending()[0].attempts == 1
        svc.stop()


def test_requeue_through_the_cli_delivers_once_the_endpoint_accepts(tmp_path: Path) -> None:
    runner = CliRunner()
    state = state_dir_for(tmp_path)
    with WebhookReceiver(plan=_status(410)) as rx:
        cfg = AlertsConfig(webhooks=(WebhookConfig(url=rx.url),), cooldown_s=0)
        svc = AlertService({"shop": cfg}, state, _delivery(max_permanent_rejections=2), seed=1)
        svc.observe(_incident(), now=T0)
        ids = {r.dedup_key: r.id for r in svc.pending()}
        _rounds(svc, 4)
        assert svc.pending() == [] and svc.dead_letter_count() == 2

        listed = runner.invoke(main, ["outbox", "--data-dir", str(tmp_path), "--json"])
        assert listed.exit_code == 0, listed.output
        rows = [json.loads(line) for line in listed.output.splitlines() if line.startswith("{")]
        assert [(r["status"], r["kind"], r["reason"], r["attempts"]) for r in rows] == [
            ("dead", "open", "rejected", 2),
            ("dead", "resolve", "rejected", 2),
        ]
        assert all(r["lastError"] == f"HTTP 410 from {rx.url.rsplit('/', 1)[0]}" for r in rows)
        text = runner.invoke(main, ["outbox", "--data-dir", str(tmp_path)])
        assert "2 notifications dead-lettered" in text.output and "reason=rejected" in text.output

        # The endpoint is fixed; the operator requeues; the running deliverer sends both, in order.
        rx.plan = always_ok
        svc.start()
        try:
            again = runner.invoke(main, ["outbox", "--data-dir", str(tmp_path), "--requeue-dead", "--json"])
            assert again.exit_code == 0, again.output
            assert "2 dead notifications requeued" in again.output
            svc._wake.set()  # what observe() does; the CLI is another process and cannot
            wait_for(lambda: len(rx.accepted) == 2, 30, message="requeued notifications accepted")
        finally:
            svc.stop()
        assert svc.pending() == [] and svc.dead_letters() == []
    requeued = [json.loads(line) for line in again.output.splitlines() if line.startswith("{")]
    assert [(r["status"], r["id"], r["attempts"]) for r in requeued] == [
        ("pending", ids[k], 0) for k in ids
    ]  # back under their own ids: the open still goes before its resolve
    assert [k for k, s, _ in rx.requests if s == 200] == list(ids)
    assert sorted(rx.accepted.values()) == [1, 1]
    assert {k for k, _ in Outbox(state).delivered_keys()} == set(ids)
    # Recording the same records again adds nothing: the keys are delivered.
    assert svc.observe(_incident(), now=T0) == 0


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command for a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)),
            *("-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_smtp_550_recipient_is_dead_lettered_450_is_retried_and_requeue_delivers(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    cert, key = tls_cert
    refusals = {"gone@example.com": "550 5.1.1 No such user", "busy@example.com": "450 4.2.1 Mailbox busy"}
    with SmtpReceiver(str(cert), str(key), "alerts", "smtp-pw-31d2", refuse_rcpt=refusals) as smtp:

        def mail(to: str) -> EmailConfig:
            return EmailConfig(
                host="127.0.0.1",
                port=smtp.port,
                ca_file=cert,
                username="alerts",
                password="smtp-pw-31d2",
                sender="cutstream@example.com",
                recipients=(to,),
                timeout_s=5,
            )

        cfg = AlertsConfig(emails=(mail("gone@example.com"), mail("busy@example.com")), cooldown_s=0)
        svc = AlertService({"shop": cfg}, tmp_path, _delivery(max_permanent_rejections=2), seed=1)
        gone_hook, busy_hook = (EmailHook(c).hook_id for c in cfg.emails)
        svc.observe(_incident(), now=T0)
        t = _rounds(svc, 4)

        # 550: two refusals per notification, then dead; 450: retried at every round, still pending.
        assert [a for a, _ in smtp.refused].count("gone@example.com") == 4
        assert [a for a, _ in smtp.refused].count("busy@example.com") == 4
        dead = svc.dead_letters()
        assert [(d.hook, d.kind, d.attempts, d.rejections) for d in dead] == [
            (gone_hook, "open", 2, 2),
            (gone_hook, "resolve", 2, 2),
        ]
        assert dead[0].last_error == f"SMTP 550 from smtp://127.0.0.1:{smtp.port}: 1 recipient(s) refused"
        busy = [r for r in svc.pending() if r.hook == busy_hook]
        assert [(r.kind, r.attempts, r.rejections) for r in busy] == [("open", 4, 0), ("resolve", 0, 0)]
        assert busy[0].last_error == f"SMTP 450 from smtp://127.0.0.1:{smtp.port}: 1 recipient(s) refused"
        assert smtp.messages == []

        # The mailbox is back: requeue that hook's dead letters only, and they are delivered.
        del smtp.refuse_rcpt["gone@example.com"]
        assert svc.requeue_dead(hook=gone_hook, now=t) == 2
        assert svc.deliver_pending(now=t + 1) == 2
        svc.stop()
    assert svc.dead_letters() == [] and {r.hook for r in svc.pending()} == {busy_hook}
    assert len(smtp.messages) == 2 and all(b"To: gone@example.com" in m for m in smtp.messages)


#: The outbox layout before dead letters (schema version 0), verbatim.
_SCHEMA_V0 = """
CREATE TABLE IF NOT EXISTS series_state (
    detector TEXT NOT NULL, series_id TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (detector, series_id));
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY, detector TEXT NOT NULL, measure TEXT NOT NULL, timeseries_id TEXT NOT NULL,
    dimensions TEXT NOT NULL, window_start TEXT NOT NULL, last_anomaly_at TEXT NOT NULL,
    anomalous_windows INTEGER NOT NULL, score REAL, status TEXT NOT NULL, announced INTEGER NOT NULL,
    facts TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL, hook TEXT NOT NULL, detector TEXT NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    UNIQUE (dedup_key, hook));
CREATE TABLE IF NOT EXISTS delivered (
    dedup_key TEXT NOT NULL, hook TEXT NOT NULL, delivered_at REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (dedup_key, hook));
"""


def test_an_outbox_of_the_previous_schema_opens_migrates_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    with WebhookReceiver(plan=_status(404)) as rx:
        webhook = WebhookConfig(url=rx.url)
        hook_id = WebhookHook(webhook).hook_id
        path = db_path(tmp_path)
        con = sqlite3.connect(path)
        con.executescript(_SCHEMA_V0)
        for i, key in enumerate(("inc-1:open", "inc-1:resolve"), start=7):
            payload = json.dumps({"dedupKey": key, "event": key.split(":")[1]})
            error = "HTTP 500 from x" if i == 7 else None
            con.execute(
                "INSERT INTO outbox (id, dedup_key, hook, detector, kind, payload, created_at, "
                "next_attempt_at, attempts, last_error) VALUES (?, ?, ?, 'shop', ?, ?, ?, ?, ?, ?)",
                (
                    i,
                    key,
                    hook_id,
                    key.split(":")[1],
                    payload,
                    T0,
                    T0,
                    9 - i,
                    error,
                ),
            )
        con.execute("INSERT INTO delivered VALUES ('inc-0:open', ?, ?, 1)", (hook_id, T0))
        con.commit()
        con.close()

        # Read-only readers (the CLI) take the old layout as it is, without migrating it.
        old = read_outbox(tmp_path)
        assert old is not None
        assert [(r.id, r.attempts, r.rejections, r.last_error) for r in old[0]] == [
            (7, 2, 0, "HTTP 500 from x"),
            (8, 1, 0, None),
        ]
        assert old[1] == []
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA user_version").fetchone()[0] == 0

        # Opening it for delivery migrates it in place (twice: idempotent) and keeps every row.
        Outbox(tmp_path).close()
        cfg = AlertsConfig(webhooks=(webhook,), cooldown_s=0)
        svc = AlertService({"shop": cfg}, tmp_path, _delivery(), seed=1)
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
            cols = {r[1] for r in con.execute("PRAGMA table_info(outbox)")}
            assert {"rejections", "requeued_at", "own_failure"} <= cols
        assert [(r.id, r.dedup_key, r.attempts, r.rejections) for r in svc.pending()] == [
            (7, "inc-1:open", 2, 0),
            (8, "inc-1:resolve", 1, 0),
        ]
        assert svc.outbox.delivered_keys() == [("inc-0:open", hook_id)]

        # The migrated rows take part in the new policy: 404 × 3 → dead letters, then requeue.
        t = _rounds(svc, 6)
        assert [(d.id, d.attempts, d.rejections) for d in svc.dead_letters()] == [(7, 5, 3), (8, 4, 3)]
        rx.plan = always_ok
        assert svc.requeue_dead(now=t) == 2
        assert svc.deliver_pending(now=t + 1) == 2
        svc.stop()
    assert list(rx.accepted) == ["inc-1:open", "inc-1:resolve"]
    assert svc.pending() == [] and svc.dead_letters() == []
