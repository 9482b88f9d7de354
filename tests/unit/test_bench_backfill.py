"""cutstream bench backfill: events/s end to end and where the time went, stage by stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutstream.bench import backfill
from cutstream.bench.clock import timed


def test_a_stage_clock_can_count_the_first_call_apart() -> None:
    spent: dict[str, float] = {}
    seen: list[int] = []
    f = timed(spent, "score", seen.append, first="setup")
    f(1)
    assert set(spent) == {"setup"}
    f(2)
    f(3)
    assert set(spent) == {"setup", "score"} and seen == [1, 2, 3]


def test_backfill_bench_reports_every_result_and_the_stages_shares(tmp_path: Path) -> None:
    out = backfill.run(events=3_000, series=30, cache_dir=tmp_path)
    assert out["events"] == out["results"] == 3_000  # one event per series and window: one result each
    stages = out["stages_s"]
    named = ("setup", "parse", "window", "models", "score", "results", "encode", "write")
    assert set(stages) == {*named, "other"}
    # every stage ran (the first step in setup, the 99 later ones in score), and the shares add up
    assert min(v for k, v in stages.items() if k != "other") > 0.0
    assert sum(out["stage_share"].values()) == pytest.approx(1.0, abs=0.01)
    assert (tmp_path / "history-3000-30.parquet").exists()  # the fixture, cached for the next run
