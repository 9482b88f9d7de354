"""The application settings: one YAML file (``--config``) plus ``CUTSTREAM_*`` environment variables.

Built once by the command line and passed down; never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.config import DeliveryConfig
from streams.config import DetectorSpec
from streams.errors import ConfigError


class AppConfig(BaseSettings):
    """Settings of a worker, the demo, replay and the dashboard.

    Environment variables override the file: ``CUTSTREAM_BROKERS``, ``CUTSTREAM_DATA_DIR``, ...
    """

    # hide_input_in_errors: no validation error may echo a value (a sasl.password or an SMTP password
    # written as a number is still a secret).
    model_config = SettingsConfigDict(
        env_prefix="CUTSTREAM_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    brokers: str | None = Field(None, description="bootstrap servers; unset = start the embedded broker")
    data_dir: Path = Field(Path("data"), description="Parquet results, checkpoints and the alert outbox")
    results_topic: str = "cutstream.results"
    group_id: str = "cutstream-workers"
    kafka: dict[str, str] = Field(
        default_factory=dict, description="extra librdkafka settings passed through (SASL, TLS, ...)"
    )
    kafka_password: SecretStr | None = Field(None, description="sasl.password, from the environment only")
    detectors: tuple[DetectorSpec, ...] = ()
    alert_delivery: DeliveryConfig = Field(
        default_factory=DeliveryConfig, description="global alert rate limit and retry policy"
    )


def load_config(path: Path | None, **overrides: Any) -> AppConfig:
    """Read ``path`` (YAML) if given, apply non-None ``overrides`` and the environment."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data.update(loaded)
    # Precedence: command-line overrides > CUTSTREAM_* environment > the file > defaults.
    # (pydantic-settings ranks constructor arguments above the environment, so the file's values
    # are dropped where the environment names the same setting.)
    for name in AppConfig.model_fields:
        if f"{AppConfig.model_config.get('env_prefix', '')}{name}".upper() in {k.upper() for k in os.environ}:
            data.pop(name, None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AppConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path or '(defaults)'}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """Each error as ``where: what``, on one line, never with the value (it may be a secret)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = tuple(str(p) for p in err["loc"])
        what = err["msg"].removeprefix("Value error, ")
        if loc == ("kafka", "sasl.password"):
            what += " (and it belongs in the CUTSTREAM_KAFKA_PASSWORD environment variable, not the file)"
        elif loc[:1] == ("kafka",) and err["type"] == "string_type":
            what += " (librdkafka settings are strings: quote the value)"
        parts.append(f"{'.'.join(loc) or '(top level)'}: {what}")
    return "; ".join(parts)
