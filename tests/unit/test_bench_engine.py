"""cutstream bench engine: it measures the product's default model, and the whole path beside it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cutstream.bench import engine
from detector.config import ForestConfig


def test_the_bench_model_is_the_product_default_unless_told_otherwise() -> None:
    assert engine.forest_config() == ForestConfig()
    small = engine.forest_config(trees=6, sample_size=8, shingle=2)
    assert (small.n_trees, small.sample_size, small.shingle_size) == (6, 8, 2)
    assert small.insert_every == ForestConfig(n_trees=6).insert_every  # ForestConfig's own rule
    assert engine.forest_config(raw_score="codisp").insert_every == 1


def test_engine_with_pipeline_reports_the_whole_path_and_where_its_time_goes() -> None:
    args = ["--series", "20", "--points", "3", "--trees", "4", "--sample-size", "8", "--shingle", "2"]
    result = CliRunner().invoke(
        engine.engine_command, [*args, "--warmup", "30", "--pipeline", "--rounds", "3"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["trees"], out["insert_every"], out["raw_score"]) == (4, 4, "isolation")
    assert out["warmup_ticks"] == 30
    pipe = out["pipeline"]
    assert pipe["bench"] == "pipeline" and pipe["warmup_ticks"] == 30
    steps = [pipe[f"{k}_s"] for k in ("keys", "prepare", "forest", "judge")]
    assert min(steps) > 0.0 and sum(steps) <= pipe["wall_s"]
    assert out["forest_over_pipeline"] == out["points_per_s"] / pipe["points_per_s"]
    # Three blocks each, in turns; each side's figure is its median block's.
    rounds = out["rounds_points_per_s"]
    assert out["rounds"] == 3 and len(rounds["forest"]) == len(rounds["pipeline"]) == 3
    assert out["points_per_s"] == sorted(rounds["forest"])[1]
    assert pipe["points_per_s"] == sorted(rounds["pipeline"])[1]
    assert pipe["wall_s"] == pytest.approx(sum(20 * 3 / r for r in rounds["pipeline"]))
    # The instrumentation is undone: the module's steps are the detector's own again.
    import detector.detector as det_mod
    from detector.normalize import judge, prepare

    assert det_mod.prepare is prepare and det_mod.judge is judge
