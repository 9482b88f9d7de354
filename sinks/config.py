"""Alert settings, per detector: webhook and email hooks. Secrets are SecretStr, never logged."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class WebhookConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key for the X-Cutstream-Signature header")
    timeout_s: float = Field(5.0, gt=0)


class EmailConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    recipients: tuple[str, ...] = Field(min_length=1)


class AlertsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    webhooks: tuple[WebhookConfig, ...] = ()
    emails: tuple[EmailConfig, ...] = ()
    dashboard_url: str = "http://127.0.0.1:8050"
