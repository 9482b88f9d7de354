"""Choosing the results topic's guarantee: auto falls back on Tansu (and says so once); exactly_once
asked for on Tansu is refused in one line; on Kafka, at_least_once runs without transactions."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest

from tests.integration.worker_procs import REPO, Stream, produce, write_config

pytestmark = pytest.mark.integration

FALLBACK = "results topic at-least-once"


def _run(bootstrap: str, topic: str, group: str, tmp_path: Any, guarantee: str) -> Any:
    from cutstream.config import load_config
    from streams.config import WorkerSettings
    from streams.worker import Worker

    app = load_config(
        write_config(tmp_path / "w.yaml", topic, group, f"{topic}.results"),
        brokers=bootstrap,
        data_dir=tmp_path,
    )
    settings = WorkerSettings(results_guarantee=guarantee, checkpoint_interval_s=0.2)  # several checkpoints
    return Worker(app, settings=settings).run_until_idle(idle_s=1.0, timeout_s=60)


def test_auto_falls_back_on_tansu_and_says_so_once(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any, caplog: Any
) -> None:
    stream = Stream(n_series=3, n_windows=40)
    topic = topic_factory("guarantee", partitions=2)
    produce(bootstrap, topic, stream.events())
    with caplog.at_level(logging.INFO):
        counters = _run(bootstrap, topic, group_factory(), tmp_path, "auto")
    said = [r for r in caplog.records if FALLBACK in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in said]
    assert counters.commits > 1  # it went on checkpointing without saying it again
    assert counters.results_written == stream.n_series * (stream.n_windows - 1)
    assert not any("guarantee=exactly_once" in r.getMessage() for r in caplog.records)


def test_exactly_once_on_tansu_is_refused_in_one_line(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any
) -> None:
    topic = topic_factory("guarantee-refused")
    cfg = write_config(tmp_path / "w.yaml", topic, group_factory(), f"{topic}.results")
    args = ["worker", "--config", str(cfg), "--brokers", bootstrap, "--data-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "cutstream", *args, "--results-guarantee", "exactly_once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "needs Kafka transactions" in errors[0] and "at_least_once" in errors[0]


@pytest.mark.brokers("kafka")
def test_at_least_once_on_kafka_runs_without_transactions(
    bootstrap: str, topic_factory: Any, group_factory: Any, tmp_path: Any, caplog: Any
) -> None:
    stream = Stream(n_series=3, n_windows=30)
    topic = topic_factory("guarantee-alo")
    produce(bootstrap, topic, stream.events())
    with caplog.at_level(logging.INFO):
        counters = _run(bootstrap, topic, group_factory(), tmp_path, "at_least_once")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "results topic guarantee=at_least_once" in text and FALLBACK not in text
    assert counters.results_produced == stream.n_series * (stream.n_windows - 1)
