"""Email alerts through a real SMTP server (aiosmtpd): STARTTLS, AUTH LOGIN, text + HTML bodies."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sinks.alerts import AlertService
from sinks.alerts.testing import SmtpReceiver
from sinks.config import AlertsConfig, DeliveryConfig, EmailConfig
from sinks.testing import result_table
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("openssl") is None, reason="needs the openssl command for a test certificate"
    ),
]

PASSWORD = "smtp-pw-4c1d9e"


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), trusted by the client through ca_file."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_emails_carry_the_facts_in_text_and_html(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    with SmtpReceiver(str(cert), str(key), "alerts", PASSWORD) as smtp:
        cfg = AlertsConfig(
            emails=(
                EmailConfig(
                    host="127.0.0.1",
                    port=smtp.port,
                    ca_file=cert,
                    username="alerts",
                    password=PASSWORD,
                    sender="cutstream@example.com",
                    recipients=("oncall@example.com", "team@example.com"),
                    timeout_s=5,
                ),
            ),
            dashboard_url="http://dash.example:8050",
            cooldown_s=0,
        )
        svc = AlertService({"shop": cfg}, tmp_path / "alerts", DeliveryConfig(backoff_initial_s=0.05), seed=1)
        table = result_table(
            dimensions={"product_name": "<b>item-A</b>"},
            values=[10.0, 11.0, 123.5, 10.0, 10.0, 10.0],
            expected=[10.0] * 6,
            scores=[0.0, 0.0, 88.25, 5.0, 5.0, 5.0],
        )
        assert svc.observe(table) == 2  # open + resolve
        keys = [r.dedup_key for r in svc.pending()]
        svc.start()
        try:
            wait_for(lambda: len(smtp.messages) == 2 and not svc.pending(), 30, message="two emails accepted")
        finally:
            svc.stop()
    assert smtp.logins == [("alerts", True)] * 2

    msgs = [email.message_from_bytes(m, policy=email.policy.default) for m in smtp.messages]
    assert [m["X-Cutstream-Dedup-Key"] for m in msgs] == keys
    assert all(keys[i].replace(":", ".") in msgs[i]["Message-ID"] for i in range(2))
    opened = msgs[0]
    assert opened["To"] == "oncall@example.com, team@example.com"
    assert "Anomaly" in opened["Subject"] and "shop/quantity" in opened["Subject"]
    text = opened.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    html = opened.get_body(preferencelist=("html",)).get_content()
    facts = [
        "shop",
        "quantity",
        "2024-05-01 00:02:00",
        "2024-05-01 00:03:00",
        "123.5",
        "88.25",
        "70",
        "90",
        keys[0],
        "http://dash.example:8050/?detector=shop",
    ]
    for fact in facts:
        assert fact in text, fact
        assert fact in html, fact
    assert re.search(r"^Actual\s+123\.5$", text, re.M) and re.search(r"^Expected\s+10$", text, re.M)
    assert re.search(r"<th[^>]*>Expected</th><td>10</td>", html)
    assert "product_name=<b>item-A</b>" in text
    # User data is escaped in the HTML body.
    assert "<b>item-A</b>" not in html and "&lt;b&gt;item-A&lt;/b&gt;" in html
    resolved = msgs[1]
    assert "Resolved" in resolved["Subject"]
    assert "resolved" in resolved.get_body(preferencelist=("plain",)).get_content()


def test_wrong_password_keeps_the_email_in_the_outbox(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    with SmtpReceiver(str(cert), str(key), "alerts", PASSWORD) as smtp:
        cfg = AlertsConfig(
            emails=(
                EmailConfig(
                    host="127.0.0.1",
                    port=smtp.port,
                    ca_file=cert,
                    username="alerts",
                    password="not-the-pw-123",
                    sender="c@example.com",
                    recipients=("o@example.com",),
                ),
            )
        )
        svc = AlertService({"shop": cfg}, tmp_path, DeliveryConfig(backoff_initial_s=0.05), seed=1)
        svc.observe(result_table(values=[1.0, 50.0], scores=[0.0, 99.0]))
        assert svc.deliver_pending() == 0
    (row,) = svc.pending()
    assert row.attempts == 1 and row.last_error == f"SMTP 535 from smtp://127.0.0.1:{smtp.port}"
    assert smtp.messages == [] and smtp.logins == [("alerts", False)]
