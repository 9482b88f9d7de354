"""Settings precedence: command line > CUTSTREAM_* environment > the config file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutstream.config import load_config
from streams.errors import ConfigError


def _file(tmp_path: Path) -> Path:
    f = tmp_path / "c.yaml"
    f.write_text(
        "brokers: file:9092\nresults_topic: from-file\n"
        "detectors: [{name: d, topic: t, measures: [{field: x}]}]\n"
    )
    return f


def test_environment_overrides_the_file_and_the_command_line_overrides_both(tmp_path, monkeypatch) -> None:
    f = _file(tmp_path)
    assert load_config(f).brokers == "file:9092"
    monkeypatch.setenv("CUTSTREAM_BROKERS", "env:9092")
    cfg = load_config(f)
    assert cfg.brokers == "env:9092" and cfg.results_topic == "from-file"
    assert load_config(f, brokers="cli:9092").brokers == "cli:9092"


def test_invalid_config_names_the_field(tmp_path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("detectors: [{name: d, topic: t, measures: [{field: x, aggregation: median}]}]\n")
    with pytest.raises(ConfigError, match="aggregation"):
        load_config(f)


def test_a_numeric_password_is_refused_without_being_echoed(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "kafka: {security.protocol: SASL_SSL, sasl.password: 918273645}\n"
        "detectors: [{name: d, topic: t, measures: [{field: x}], alerts: {emails: [{host: h, "
        "username: u, password: 55443322, sender: a@example, recipients: [b@example]}], "
        "webhooks: [{url: 'https://h.example/x', secret: 77665544}]}}]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(f)
    text = str(err.value)
    for secret in ("918273645", "55443322", "77665544"):
        assert secret not in text and secret not in str(err.value.__context__)  # nor the original
    assert "\n" not in text  # one line
    assert "kafka.sasl.password: Input should be a valid string" in text
    assert "CUTSTREAM_KAFKA_PASSWORD" in text
    assert "detectors.0.alerts.emails.0.password" in text and "webhooks.0.secret" in text


def test_smtp_login_without_tls_is_refused_in_one_line_naming_the_setting(tmp_path) -> None:
    from click.testing import CliRunner

    from cutstream.cli import main

    f = tmp_path / "c.yaml"
    email = "{host: smtp.example, port: 25, starttls: false, username: u, sender: a@e, recipients: [b@e]"
    f.write_text(
        f"detectors: [{{name: d, topic: t, measures: [{{field: x}}], alerts: {{emails: [{email}}}]}}}}]\n"
    )
    got = CliRunner().invoke(main, ["worker", "--config", str(f)])
    assert got.exit_code == 1 and "Traceback" not in got.output
    (line,) = got.output.strip().splitlines()
    assert line == (
        f"Error: invalid config {f}: detectors.0.alerts.emails.0: SMTP login to smtp.example:25 without "
        "TLS would send the password in clear text: set starttls: true or implicit_tls: true, or "
        "allow_insecure_auth: true to allow it"
    )
    f.write_text(f.read_text().replace("starttls: false", "starttls: false, allow_insecure_auth: true"))
    (email_cfg,) = load_config(f).detectors[0].alerts.emails
    assert email_cfg.allow_insecure_auth and not email_cfg.tls
    f.write_text(f.read_text().replace("allow_insecure_auth: true", "implicit_tls: true"))
    assert load_config(f).detectors[0].alerts.emails[0].implicit_tls
