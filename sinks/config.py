"""Alert settings, per detector: webhook and email hooks, incidents, cool-down; and the delivery policy.

Secrets (webhook HMAC key, SMTP password) are ``SecretStr``: never logged, never stored in the outbox
or the results, and placeholder values are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

#: Values that look like a secret someone forgot to set; refused so that they never reach production.
_PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "secret", "password", "xxx", "todo"})


def _from_env(model: BaseModel, field: str) -> None:
    """``<field>_env: NAME`` → ``<field>`` read from the environment variable NAME (keeps secrets out
    of the YAML file). Runs after validation, so no validation error can echo the secret."""
    name = getattr(model, f"{field}_env")
    if not name:
        return
    if getattr(model, field) is not None:
        raise ValueError(f"set either {field} or {field}_env, not both")
    if name not in os.environ:
        raise ValueError(f"{field}_env: the environment variable {name} is not set")
    value = SecretStr(os.environ[name])
    _refuse_placeholder(value)
    object.__setattr__(model, field, value)  # frozen model: set once, while it is being built


def _refuse_placeholder(v: SecretStr | None) -> SecretStr | None:
    if v is not None and v.get_secret_value().strip().lower() in _PLACEHOLDERS:
        raise ValueError("a placeholder secret is not allowed: set a real value (from the environment)")
    return v


class WebhookConfig(BaseModel):
    """An HTTP endpoint that receives a signed JSON POST per notification."""

    # hide_input_in_errors: a validation error never echoes a value (it may be the secret).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str = Field(
        pattern=r"^https?://", description="where the JSON POST goes (never logged: it may hold a token)"
    )
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for the X-Cutstream-Signature header"
    )
    secret_env: str | None = Field(default=None, description="read the secret from this environment variable")
    timeout_s: float = Field(default=5.0, gt=0, description="connect + read timeout of one attempt")

    _check_secret = field_validator("secret")(_refuse_placeholder)

    @model_validator(mode="after")
    def _secret_from_env(self) -> WebhookConfig:
        _from_env(self, "secret")
        return self


class EmailConfig(BaseModel):
    """An SMTP relay and the recipients of a notification (text and HTML bodies with the same facts).

    A login (``username``) goes over TLS only: STARTTLS (the default, port 587) or implicit TLS
    (``implicit_tls``, port 465); without either the config is refused unless ``allow_insecure_auth``
    says that sending the password in clear text is meant (a local catcher such as Mailpit).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    host: str
    port: int = 587
    starttls: bool = Field(
        default=True,
        description="upgrade the connection with STARTTLS before login (fails if the server lacks it)",
    )
    implicit_tls: bool = Field(
        default=False, description="TLS from the first byte (SMTPS, usually port 465); starttls unused"
    )
    allow_insecure_auth: bool = Field(
        default=False,
        description="allow a login (username and password) over a connection without TLS: the password "
        "crosses the network in clear text; for a local catcher only",
    )
    ca_file: Path | None = Field(
        default=None, description="CA bundle for the relay's certificate (default: the system's)"
    )
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = Field(
        default=None, description="read the password from this environment variable"
    )
    sender: str
    recipients: tuple[str, ...] = Field(min_length=1)
    timeout_s: float = Field(default=10.0, gt=0, description="socket timeout of one attempt")

    _check_password = field_validator("password")(_refuse_placeholder)

    @model_validator(mode="after")
    def _password_from_env(self) -> EmailConfig:
        _from_env(self, "password")
        return self

    @model_validator(mode="after")
    def _no_login_in_clear_text(self) -> EmailConfig:
        if self.username and not self.tls and not self.allow_insecure_auth:
            raise ValueError(self.insecure_auth_error())
        return self

    @property
    def tls(self) -> bool:
        """True when the session is encrypted before anything is sent (STARTTLS or implicit TLS)."""
        return self.starttls or self.implicit_tls

    def insecure_auth_error(self) -> str:
        return (
            f"SMTP login to {self.host}:{self.port} without TLS would send the password in clear text: "
            "set starttls: true or implicit_tls: true, or allow_insecure_auth: true to allow it"
        )


class AlertsConfig(BaseModel):
    """Per detector: where alerts go and how anomalous windows become incidents.

    Incidents are decided in event time (window starts), so that replaying the same records after a
    crash takes the same decisions and produces the same de-duplication keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    webhooks: tuple[WebhookConfig, ...] = ()
    emails: tuple[EmailConfig, ...] = ()
    dashboard_url: str = "http://127.0.0.1:8050"
    min_confidence: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="anomalous windows below this anomalyConfidenceScore raise no alert",
    )
    resolve_after_windows: int = Field(
        default=3,
        ge=1,
        description="an incident resolves after this many consecutive normal windows of its series; "
        "anomalies closer together than that merge into one incident",
    )
    cooldown_s: float = Field(
        default=900.0,
        ge=0,
        description="per series, event-time seconds between two notifications: updates of an open "
        "incident are coalesced, and an incident opening this soon after the previous one's last notice "
        "stays silent unless it is still going once the cool-down has passed",
    )
    notify_updates: bool = Field(default=True, description="send update notices while an incident is open")

    @property
    def has_hooks(self) -> bool:
        return bool(self.webhooks or self.emails)


class DeliveryConfig(BaseModel):
    """How the outbox is drained: rate limit, retries and dead letters (all hooks of all detectors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_per_minute: int = Field(
        default=60,
        ge=1,
        description="global cap on accepted notifications per rolling minute; excess waits in the outbox",
    )
    backoff_initial_s: float = Field(
        default=1.0, gt=0, description="first retry delay (doubles per attempt, with jitter)"
    )
    backoff_max_s: float = Field(
        default=300.0,
        gt=0,
        description="retry delay ceiling; a notification is never dropped (at worst dead-lettered, below)",
    )
    max_permanent_rejections: int = Field(
        default=3,
        ge=0,
        description="after this many permanent refusals of one notification (HTTP 4xx other than "
        "408/425/429, SMTP 5xx), move it to the outbox's dead letters, log it at ERROR and stop retrying "
        "it until `cutstream outbox --requeue-dead`; the attempts in between follow the back-off, so a "
        "briefly misconfigured endpoint gets a few chances; 0 = retry permanent refusals forever",
    )
    give_up_after_s: float = Field(
        default=0.0,
        ge=0,
        description="dead-letter a notification whose attempt fails (transiently or not) this many seconds "
        "or more after it was queued; 0 = never: an endpoint that is down delays alerts, never drops them",
    )
    retry_after_max_s: float = Field(default=3600.0, gt=0, description="ceiling on an endpoint's Retry-After")
    idle_wait_s: float = Field(
        default=5.0, gt=0, description="longest sleep of the delivery thread when nothing is due"
    )
