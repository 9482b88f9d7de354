"""Alert settings: secrets from the environment, placeholders refused, secrets absent from errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from sinks.config import AlertsConfig, EmailConfig, WebhookConfig


def test_secrets_come_from_named_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_WEBHOOK_KEY", "k-31415926")
    monkeypatch.setenv("T_SMTP_PW", "p-27182818")
    cfg = AlertsConfig.model_validate(
        {
            "webhooks": [{"url": "https://h.example/x", "secret_env": "T_WEBHOOK_KEY"}],
            "emails": [
                {
                    "host": "smtp.example",
                    "password_env": "T_SMTP_PW",
                    "sender": "a@example",
                    "recipients": ["b@example"],
                }
            ],
        }
    )
    assert cfg.webhooks[0].secret is not None and cfg.webhooks[0].secret.get_secret_value() == "k-31415926"
    assert cfg.emails[0].password is not None and cfg.emails[0].password.get_secret_value() == "p-27182818"
    assert "k-31415926" not in repr(cfg) and "p-27182818" not in cfg.model_dump_json()


def test_missing_variable_placeholder_and_both_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_ABSENT", raising=False)
    with pytest.raises(pydantic.ValidationError, match="T_ABSENT is not set"):
        WebhookConfig(url="https://h.example/x", secret_env="T_ABSENT")
    with pytest.raises(pydantic.ValidationError, match="placeholder"):
        WebhookConfig(url="https://h.example/x", secret="changeme")
    monkeypatch.setenv("T_PLACEHOLDER", "changeme")
    with pytest.raises(pydantic.ValidationError, match="placeholder"):
        WebhookConfig(url="https://h.example/x", secret_env="T_PLACEHOLDER")
    monkeypatch.setenv("T_PW", "p-16180339")
    with pytest.raises(pydantic.ValidationError, match="not both"):
        EmailConfig(
            host="h", sender="a@example", recipients=("b@example",), password="x-1", password_env="T_PW"
        )
    # Another field's error, raised after the secret was read, does not echo it.
    with pytest.raises(pydantic.ValidationError) as err:
        EmailConfig.model_validate(
            {"host": "h", "sender": "a@example", "recipients": [], "password_env": "T_PW"}
        )
    assert "p-16180339" not in str(err.value)
    with pytest.raises(pydantic.ValidationError):
        WebhookConfig(url="ftp://h.example/x")


def test_the_worker_delivers_alerts_with_the_configured_delivery_settings(tmp_path: Path) -> None:
    from cutstream.config import AppConfig
    from sinks.config import DeliveryConfig
    from streams.config import DetectorSpec, MeasureSpec
    from streams.worker import Worker

    spec = DetectorSpec(
        name="shop",
        topic="t",
        timestamp_field="ts",
        measures=(MeasureSpec(field="value"),),
        alerts=AlertsConfig(webhooks=(WebhookConfig(url="http://127.0.0.1:9/hook"),)),
    )
    delivery = DeliveryConfig(max_per_minute=7, max_permanent_rejections=1, give_up_after_s=600)
    app = AppConfig(brokers="127.0.0.1:9", data_dir=tmp_path, detectors=(spec,), alert_delivery=delivery)
    alerts = Worker(app).alerts
    assert alerts is not None
    assert alerts.delivery == delivery
