"""One notification never stops another: a hook that raises, a CRLF in a dimension value, against a
real SMTP server (aiosmtpd) and real HTTP servers."""

from __future__ import annotations

import email
import email.policy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sinks.alerts import AlertService
from sinks.alerts.hooks import Attempt, WebhookHook
from sinks.alerts.testing import SmtpReceiver, WebhookReceiver
from sinks.config import AlertsConfig, DeliveryConfig, EmailConfig, WebhookConfig
from sinks.record import timeseries_id
from sinks.testing import result_table

pytestmark = [
    pytest.mark.integration,
    # aiosmtpd warns about AUTH without its STARTTLS: what tls="none" and tls="implicit" ask for.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
    pytest.mark.skipif(
        shutil.which("openssl") is None, reason="needs the openssl command for a test certificate"
    ),
]

PASSWORD = "smtp-pw-31f7c2"
T0 = 1_800_000_000.0  # the virtual clock: recording time of every notification below
#: Part of what the user hook raises: an exception's text may hold anything, it is never stored.
EXC_TEXT = "boom-token-8e1d0c"


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), trusted by the client through ca_file."""
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


def _mail(port: int, cert: Path) -> EmailConfig:
    return EmailConfig(
        host="127.0.0.1",
        port=port,
        ca_file=cert,
        username="alerts",
        password=PASSWORD,
        sender="cutstream@example.com",
        recipients=("oncall@example.com",),
        timeout_s=5,
    )


def _incident(item: str, start_ms: int = 1_714_521_600_000) -> pa.Table:
    """One series, one incident: an ``open`` and a ``resolve`` notification, in that order."""
    return result_table(
        dimensions={"product_name": item},
        start_ms=start_ms,
        values=[1.0, 9.0, 1.0, 1.0, 1.0],
        scores=[0.0, 99.0, 0.0, 0.0, 0.0],
    )


class RaisingForSeries:
    """A user's hook (a real webhook client underneath) with a bug: it raises for one series."""

    def __init__(self, url: str, series: str) -> None:
        self._inner = WebhookHook(WebhookConfig(url=url, timeout_s=5))
        self.hook_id = "user:pager"
        self.label = "pager"
        self.series = series
        self.calls: list[str] = []

    def send(self, payload: dict[str, Any]) -> Attempt:
        self.calls.append(str(payload["dedupKey"]))
        if payload["timeseriesId"] == self.series:
            raise RuntimeError(f"user hook bug {EXC_TEXT}")
        return self._inner.send(payload)

    def close(self) -> None:
        self._inner.close()


def test_a_hook_that_raises_delays_no_other_notification(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    series_a = timeseries_id("shop", "quantity", {"product_name": "item-A"})
    with (
        WebhookReceiver() as web,
        WebhookReceiver() as pager_endpoint,
        SmtpReceiver(str(cert), str(key), "alerts", PASSWORD) as smtp,
    ):
        pager = RaisingForSeries(pager_endpoint.url, series_a)
        cfg = AlertsConfig(
            webhooks=(WebhookConfig(url=web.url),), emails=(_mail(smtp.port, cert),), cooldown_s=0
        )
        delivery = DeliveryConfig(backoff_initial_s=5, backoff_max_s=5, max_permanent_rejections=3)
        svc = AlertService({"shop": cfg}, tmp_path, delivery, seed=1, user_hooks={"shop": [pager]})
        # item-A's notifications are recorded first: its failing 'open' heads the pager's queue.
        assert svc.observe(_incident("item-A"), now=T0) == 6
        assert svc.observe(_incident("item-B"), now=T0) == 6
        keys_a = [r.dedup_key for r in svc.pending() if r.hook == pager.hook_id][:2]
        keys_b = [r.dedup_key for r in svc.pending() if r.hook == pager.hook_id][2:]
        assert all(k.startswith(series_a[:16]) for k in keys_a) and len(keys_b) == 2

        # One delivery pass: everything but item-A's pager notices arrives, in that very pass.
        assert svc.deliver_pending(now=T0) == 10
        assert sorted(web.accepted) == sorted(keys_a + keys_b)
        assert len(smtp.messages) == 4
        assert list(pager_endpoint.accepted) == keys_b  # the same hook's other series went on
        # The raising notice is a failed attempt of that notice alone; item-A's resolve stays
        # behind its open (a series' notices keep their order), tried not at all.
        assert pager.calls == [keys_a[0], *keys_b]
        opened, resolved = svc.pending()
        assert (opened.dedup_key, opened.attempts, opened.rejections, opened.own_failure) == (
            keys_a[0],
            1,
            1,
            True,
        )
        assert opened.last_error == "RuntimeError raised by pager"  # the type, never the text
        assert (resolved.dedup_key, resolved.attempts) == (keys_a[1], 0)

        # While item-A's open waits for its retry (the hold is stored with the row), a new series'
        # notices go through the same hook at once.
        svc.observe(_incident("item-C", start_ms=1_714_525_200_000), now=T0 + 1)
        assert svc.deliver_pending(now=T0 + 1) == 6
        assert len(pager_endpoint.accepted) == 4 and len(smtp.messages) == 6
        assert [r.dedup_key for r in svc.pending()] == keys_a  # untouched: not yet due
        assert pager.calls[-2:] == list(pager_endpoint.accepted)[-2:]

        # It always raises: permanent, so after max_permanent_rejections it is a dead letter; then
        # the resolve is tried (and dies the same way). Nothing else was ever held.
        for i in range(1, 8):
            svc.deliver_pending(now=T0 + 10.0 * i)
        svc.stop()
    dead = svc.dead_letters()
    assert [(d.dedup_key, d.rejections, d.reason) for d in dead] == [(k, 3, "rejected") for k in keys_a]
    assert svc.pending() == []
    assert EXC_TEXT not in repr(dead) and len(smtp.messages) == 6 and len(web.accepted) == 6


def test_crlf_in_a_dimension_value_gives_an_email_with_intact_headers(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    cert, key = tls_cert
    hostile = "item\r\nBcc: attacker@evil.example\r\nX-Injected: yes\u2028Subject: pwned"
    with (
        WebhookReceiver() as web,
        SmtpReceiver(str(cert), str(key), "alerts", PASSWORD) as smtp,
    ):
        cfg = AlertsConfig(
            webhooks=(WebhookConfig(url=web.url),), emails=(_mail(smtp.port, cert),), cooldown_s=0
        )
        svc = AlertService({"shop": cfg}, tmp_path, DeliveryConfig(), seed=1)
        table = pa.concat_tables([_incident(hostile), _incident("item-B")])
        assert svc.observe(table, now=T0) == 8
        keys = sorted({r.dedup_key for r in svc.pending()})
        # Every notification of both series goes out in one pass, the hostile one included.
        assert svc.deliver_pending(now=T0) == 8
        svc.stop()
    assert sorted(web.accepted) == keys
    assert len(smtp.messages) == 4
    hostile_payloads = [p for _, _, p in web.requests if p["dimensions"]["product_name"] == hostile]
    assert len(hostile_payloads) == 2  # the JSON carries the value unchanged

    for raw in smtp.messages:
        head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
        names = [line.split(":", 1)[0] for line in head.split("\r\n") if line and not line[0].isspace()]
        assert sorted(names) == sorted(
            [
                *("Subject", "From", "To", "Message-ID", "X-Cutstream-Dedup-Key", "Date"),
                *("MIME-Version", "Content-Type"),
            ]
        )
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert msg["To"] == "oncall@example.com" and msg["X-Cutstream-Dedup-Key"] in keys
        assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    mails = [email.message_from_bytes(m, policy=email.policy.default) for m in smtp.messages]
    shown = [m for m in mails if "Bcc" in m["Subject"]]
    assert len(shown) == 2
    for m in shown:
        # The subject shows the value, escaped on one line; the body shows it as it is.
        assert r"item\r\nBcc: attacker@evil.example\r\nX-Injected: yes\u2028Subject: pwned" in m["Subject"]
        text = m.get_body(preferencelist=("plain",)).get_content()
        assert "product_name=item" in text and "Bcc: attacker@evil.example" in text


def test_smtp_login_over_implicit_tls(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    with SmtpReceiver(str(cert), str(key), "alerts", PASSWORD, tls="implicit") as smtp:
        mail = _mail(smtp.port, cert).model_copy(update={"implicit_tls": True, "starttls": False})
        svc = AlertService({"shop": AlertsConfig(emails=(mail,))}, tmp_path, DeliveryConfig(), seed=1)
        svc.observe(_incident("item-A"), now=T0)
        assert svc.deliver_pending(now=T0) == 2
        svc.stop()
    assert smtp.logins == [("alerts", True)] * 2 and len(smtp.messages) == 2


def test_no_password_crosses_a_connection_without_tls_unless_allowed(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    cert, key = tls_cert
    with SmtpReceiver(str(cert), str(key), "alerts", PASSWORD, tls="none") as smtp:
        base = _mail(smtp.port, cert)
        # starttls (the default) against a server that does not offer it: no fallback to clear text.
        wants_tls = AlertService(
            {"shop": AlertsConfig(emails=(base,))}, tmp_path / "a", DeliveryConfig(), seed=1
        )
        wants_tls.observe(_incident("item-A"), now=T0)
        assert wants_tls.deliver_pending(now=T0) == 0
        wants_tls.stop()
        assert smtp.logins == [] and smtp.messages == []
        assert (
            wants_tls.pending()[0].last_error
            == f"SMTPNotSupportedError talking to smtp://127.0.0.1:{smtp.port}"
        )

        # A config that skipped validation still never logs in without TLS (checked again at send).
        unchecked = EmailConfig.model_construct(**{**dict(base), "starttls": False})
        bypass = AlertService(
            {"shop": AlertsConfig.model_construct(emails=(unchecked,))}, tmp_path / "b", seed=1
        )
        bypass.observe(_incident("item-A"), now=T0)
        assert bypass.deliver_pending(now=T0) == 0
        bypass.stop()
        assert smtp.logins == [] and smtp.messages == []
        assert "allow_insecure_auth: true" in str(bypass.pending()[0].last_error)

        # Explicitly allowed (a local catcher): the login goes in clear text and the mail arrives.
        allowed = base.model_copy(update={"starttls": False, "allow_insecure_auth": True})
        svc = AlertService(
            {"shop": AlertsConfig(emails=(allowed,))}, tmp_path / "c", DeliveryConfig(), seed=1
        )
        svc.observe(_incident("item-A"), now=T0)
        assert svc.deliver_pending(now=T0) == 2
        svc.stop()
    assert smtp.logins == [("alerts", True)] * 2 and len(smtp.messages) == 2


def test_an_outbox_of_version_1_is_read_as_it_is_and_migrated_with_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from sinks.alerts.outbox import SCHEMA_VERSION, Outbox, db_path, read_outbox

    with WebhookReceiver() as web:
        cfg = AlertsConfig(webhooks=(WebhookConfig(url=web.url),), cooldown_s=0)
        with AlertService({"shop": cfg}, tmp_path, seed=1) as first:
            first.observe(_incident("item-A"), now=T0)
        with sqlite3.connect(db_path(tmp_path)) as con:  # back to version 1's layout
            con.execute("ALTER TABLE outbox DROP COLUMN own_failure")
            con.execute("PRAGMA user_version = 1")
        got = read_outbox(tmp_path)  # the read-only reader takes it as it is
        assert got is not None and [r.own_failure for r in got[0]] == [False, False]
        with sqlite3.connect(db_path(tmp_path)) as con:
            assert con.execute("PRAGMA user_version").fetchone()[0] == 1
        Outbox(tmp_path).close()  # opening it for delivery migrates it
        svc = AlertService({"shop": cfg}, tmp_path, seed=1)
        with sqlite3.connect(db_path(tmp_path)) as con:
            assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert svc.deliver_pending(now=T0) == 2
        svc.stop()
    assert len(web.accepted) == 2
