"""Secrets (webhook key, a token in the webhook URL, SMTP password, Kafka password) never reach the
logs, the outbox, the results or the command line's output, on success and on failure paths."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cutstream.cli_sinks import outbox
from sinks.alerts import AlertService
from sinks.alerts.testing import SmtpReceiver, WebhookReceiver
from sinks.config import AlertsConfig, DeliveryConfig, EmailConfig, WebhookConfig
from sinks.errors import SinkError
from sinks.parquet import ParquetSink
from sinks.results_topic import ResultsProducer
from sinks.testing import result_table
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("openssl") is None, reason="needs the openssl command for a test certificate"
    ),
]

HMAC_KEY = "hmac-key-0f9e8d7c6b"
URL_TOKEN = "urltoken-5a4b3c2d1e"
SMTP_PASSWORD = "smtp-password-77aa88bb"
WRONG_PASSWORD = "wrong-password-99cc00dd"
KAFKA_PASSWORD = "kafka-password-1122ee"
SECRETS = (HMAC_KEY, URL_TOKEN, SMTP_PASSWORD, WRONG_PASSWORD, KAFKA_PASSWORD)


def _plan(n: int) -> tuple[int, dict[str, str]]:
    return (500, {}) if n == 1 else (200, {})


def test_secrets_never_reach_logs_outbox_or_results(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
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
    data = tmp_path / "data"
    table = result_table(values=[1.0, 50.0, 1.0, 1.0, 1.0], scores=[0.0, 99.0, 0.0, 0.0, 0.0])
    with (
        WebhookReceiver(secret=HMAC_KEY, plan=_plan) as rx,
        SmtpReceiver(str(cert), str(key), "alerts", SMTP_PASSWORD) as smtp,
    ):

        def mail(password: str, to: str) -> EmailConfig:
            return EmailConfig(
                host="127.0.0.1",
                port=smtp.port,
                ca_file=cert,
                username="alerts",
                password=password,
                sender="c@example.com",
                recipients=(to,),
            )

        cfg = AlertsConfig(
            webhooks=(WebhookConfig(url=f"{rx.url}?token={URL_TOKEN}", secret=HMAC_KEY),),
            emails=(mail(SMTP_PASSWORD, "ok@example.com"), mail(WRONG_PASSWORD, "bad@example.com")),
        )
        assert HMAC_KEY not in repr(cfg) and SMTP_PASSWORD not in cfg.model_dump_json()
        delivery = DeliveryConfig(backoff_initial_s=0.05, max_permanent_rejections=2)
        svc = AlertService({"shop": cfg}, data / "alerts", delivery, seed=1)
        svc.observe(table)
        ParquetSink(data).write(table, "events.0", 0, 4)
        svc.start()
        try:
            wait_for(lambda: len(rx.accepted) == 2 and len(smtp.messages) == 2, 30, message="deliveries")
            # 535 is permanent: after 2 refusals each, both of that hook's notifications are dead
            # letters (logged at ERROR, stored, listed: the password must show up in none of them).
            wait_for(lambda: svc.dead_letter_count() == 2, 30, message="wrong-password emails dead-lettered")
        finally:
            svc.stop()
        cli = CliRunner().invoke(outbox, ["--data-dir", str(data)])
        cli_json = CliRunner().invoke(outbox, ["--data-dir", str(data), "--json"])

    producer = ResultsProducer(
        "127.0.0.1:1",
        "nowhere",
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": KAFKA_PASSWORD,
            "message.timeout.ms": "300",
        },
    )
    producer.produce(table)
    with pytest.raises(SinkError) as err:
        producer.flush(5)

    assert cli.exit_code == 0 and "dead" in cli.output and "SMTP 535" in cli.output
    assert sum(1 for _, ok in smtp.logins if not ok) == 4
    assert any(r.levelname == "ERROR" and "dead-lettered" in r.getMessage() for r in caplog.records)
    assert rx.bad_signatures == 0
    haystacks = {
        "logs": caplog.text,
        "cli": cli.output + cli_json.output,
        "error": str(err.value),
        "webhook bodies": repr(rx.requests),
        "emails": repr(smtp.messages),
    }
    for path in data.rglob("*"):
        if path.is_file():
            haystacks[str(path.relative_to(data))] = path.read_bytes().decode("latin-1")
    assert any("outbox.db" in name for name in haystacks) and any(".parquet" in n for n in haystacks)
    for name, text in haystacks.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into {name}"
