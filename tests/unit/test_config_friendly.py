"""The config file as a newcomer writes it: durations, misspelt keys, a wrong --detector, no topic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cutstream.cli import main
from cutstream.config import load_config
from streams.errors import ConfigError

DETECTOR = {
    "name": "shop",
    "topic": "orders",
    "dimensions": ["item"],
    "measures": [{"field": "quantity"}],
}


def _write(tmp_path: Path, **detector: object) -> Path:
    path = tmp_path / "detectors.yaml"
    path.write_text(yaml.safe_dump({"detectors": [{**DETECTOR, **detector}]}))
    return path


def test_ms_settings_take_durations_the_model_s_learning_ms_included(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        window_ms="1h",
        allowed_lateness_ms="90s",
        idle_timeout_ms=5000,
        model={"scoring": {"learning_ms": "1d"}},
    )
    spec = load_config(path).detectors[0]
    assert (spec.window_ms, spec.allowed_lateness_ms, spec.idle_timeout_ms) == (3_600_000, 90_000, 5000)
    assert spec.model.scoring.learning_ms == 86_400_000


def test_librdkafka_settings_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"session.timeout.ms": "6000"}, "detectors": [DETECTOR]}))
    assert load_config(path).kafka == {"session.timeout.ms": "6000"}


def test_a_wrong_duration_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, window_ms="an hour"))
    assert "detectors.0.window_ms:" in str(err.value)
    assert "(milliseconds, or a duration such as 90s, 5m, 1h, 1d)" in str(err.value)


def test_a_misspelt_key_gets_a_did_you_mean_at_any_depth(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, windw_ms=60000, model={"scoring": {"treshold": 80}}))
    text = str(err.value)
    assert "detectors.0.windw_ms: unknown setting (did you mean `window_ms`?)" in text
    assert "detectors.0.model.scoring.treshold: unknown setting (did you mean `threshold`?)" in text
    assert "https://" not in text  # no pydantic links


def test_a_wrong_detector_lists_those_that_exist_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"detectors": [DETECTOR, {**DETECTOR, "name": "hosts"}]}))
    history = tmp_path / "h.csv"
    history.write_text("timestamp,item,quantity\n2026-01-01T00:00:00Z,a,1\n")
    out = CliRunner().invoke(main, ["backfill", str(history), "--config", str(path), "--detector", "shpo"])
    assert out.exit_code == 2
    assert (
        out.output.strip().splitlines()[-1]
        == "Error: no detector named 'shpo' in the config; it has: shop, hosts"
    )


def test_backfill_needs_no_topic_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"detectors": [{k: v for k, v in DETECTOR.items() if k != "topic"}]}))
    history = tmp_path / "h.csv"
    history.write_text(
        "timestamp,item,quantity\n" + "".join(f"2026-01-01T00:{m:02d}:00Z,a,{m % 3}\n" for m in range(30))
    )
    out = CliRunner().invoke(
        main, ["backfill", str(history), "--config", str(path), "--data-dir", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    assert list((tmp_path / "results").rglob("*.parquet"))
    with pytest.raises(ConfigError, match=r"detectors\.0\.topic"):
        load_config(path)  # a worker still needs one
