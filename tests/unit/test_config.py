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
