"""`cutstream score`: same rows in the same order, causal, deterministic (runs the real command)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cutstream.cli import main


def write_series(path: Path, n: int, seed: int = 0) -> None:
    """A NAB-style CSV: noise around a level, a spike, a repeated timestamp and a step back in time."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2014-03-01T00:00:00")
    times = [t0 + np.timedelta64(5 * i, "m") for i in range(n)]
    times[300] = times[299]  # duplicated timestamp
    if n > 500:
        times[500] = times[450]  # a step back in time
    values = 10 + 0.5 * rng.standard_normal(n)
    if n > 700:
        values[700] += 15
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for t, v in zip(times, values, strict=True):
            w.writerow([str(t).replace("T", " "), repr(float(v))])


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def score(inp: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    result = CliRunner().invoke(main, ["score", str(inp), "--output", str(out), *extra])
    assert result.exit_code == 0, result.output
    return read(out)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    d = tmp_path_factory.mktemp("score")
    write_series(d / "in.csv", 900)
    return d, score(d / "in.csv", d / "out.csv")


def test_same_rows_in_the_same_order_with_scores_in_0_1(scored):
    d, rows = scored
    src = read(d / "in.csv")
    assert [(r["timestamp"], r["value"]) for r in rows] == [(r["timestamp"], r["value"]) for r in src]
    assert list(rows[0])[:3] == ["timestamp", "value", "anomaly_score"]
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    assert np.all((scores >= 0) & (scores <= 1))
    top = int(np.argmax(scores))
    assert 700 <= top <= 703 and scores[top] > 0.7  # the spike (row 700) stands out, at once or soon after
    assert rows[0]["model_stage"] == "LEARNING" and rows[-1]["model_stage"] == "INFERENCE"


def test_scoring_a_prefix_gives_the_same_scores_for_those_rows(scored):
    d, rows = scored
    src = (d / "in.csv").read_text().splitlines()
    (d / "prefix.csv").write_text("\n".join(src[: 1 + 600]) + "\n")
    prefix = score(d / "prefix.csv", d / "prefix_out.csv")
    assert len(prefix) == 600
    assert prefix == rows[:600]


def test_runs_are_deterministic_and_the_seed_matters(scored):
    d, rows = scored
    again = score(d / "in.csv", d / "again.csv")
    assert again == rows
    other = score(d / "in.csv", d / "seed7.csv", "--seed", "7")
    assert [r["raw_score"] for r in other] != [r["raw_score"] for r in rows]


def test_a_folder_is_scored_file_by_file_with_the_same_results(scored, tmp_path):
    d, rows = scored
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.csv").write_bytes((d / "in.csv").read_bytes())
    write_series(src / "b.csv", 400, seed=1)
    result = CliRunner().invoke(main, ["score", str(src), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "scored 2 file(s)" in result.output
    assert read(tmp_path / "out" / "sub" / "a.csv") == rows  # neither the name nor other files matter
    assert len(read(tmp_path / "out" / "b.csv")) == 400


def test_bad_input_is_a_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("time,val\n1,2\n")
    result = CliRunner().invoke(
        main, ["score", str(tmp_path / "bad.csv"), "--output", str(tmp_path / "o.csv")]
    )
    assert result.exit_code != 0
    assert "timestamp,value" in result.output
