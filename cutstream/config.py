"""The application settings: one YAML file (``--config``) plus ``CUTSTREAM_*`` environment variables.

Built once by the command line and passed down; never at import time.
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cutstream.durations import parse_duration_ms
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


def load_config(path: Path | None, *, topic_required: bool = True, **overrides: Any) -> AppConfig:
    """Read ``path`` (YAML) if given, apply non-None ``overrides`` and the environment.

    Every ``*_ms`` setting also takes a duration (``60s``, ``5m``, ``1h``, ``1d``). With
    ``topic_required=False`` (backfill, evaluate: history from a file) a detector needs no ``topic``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data.update(_with_durations(loaded))
        if not topic_required:
            for spec in data.get("detectors") or ():
                if isinstance(spec, dict):
                    spec.setdefault("topic", NO_TOPIC)
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


#: The topic of a detector read by a command that takes its events from a file.
NO_TOPIC = "(none: history from a file)"


def _with_durations(node: Any, key: str = "") -> Any:
    """``*_ms`` settings written as durations (``90s``, ``5m``, ``1h``, ``1d``) as milliseconds.

    librdkafka's settings under ``kafka`` pass through as they are (their names end in ``.ms``).
    A text that is not a duration is left for validation to report.
    """
    if isinstance(node, dict):
        return {k: v if k == "kafka" else _with_durations(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_durations(v) for v in node]
    if key.endswith("_ms") and isinstance(node, str):
        try:
            return parse_duration_ms(node)
        except ValueError:
            return node
    return node


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The settings class that a validation error's location (less its last part) points into."""
    model: type[BaseModel] = AppConfig
    for part in loc:
        if isinstance(part, int) or part.isdigit():
            continue
        field = model.model_fields.get(part)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(loc: tuple[str | int, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    if close:
        return f" (did you mean `{close[0]}`?)"
    return f" (known: {', '.join(model.model_fields)})"


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
        if err["type"] == "extra_forbidden":
            what = "unknown setting" + _did_you_mean(tuple(err["loc"]))
        elif loc[-1:] and loc[-1].endswith("_ms") and err["type"] == "int_parsing":
            what += " (milliseconds, or a duration such as 90s, 5m, 1h, 1d)"
        parts.append(f"{'.'.join(loc) or '(top level)'}: {what}")
    return "; ".join(parts)
