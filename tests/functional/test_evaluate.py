"""`cutstream evaluate` end to end: a small labelled history through the real command, its mistakes
as one line and an exit status, and the suite's short part the way `make eval ARGS=--quick` runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from cutstream.cli import main

T0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC
W = 60_000
WINDOWS = 400
LABELLED_SPIKE = 300  # item A, labelled kind=spike
UNLABELLED_SPIKE = 350  # item B, in no label: a false alarm
BATCH = range(200, 206)  # item B, 5x for six windows, labelled expect=normal kind=batch_job

CONFIG = {
    "detectors": [
        {
            "name": "shop",
            "topic": "orders",
            "timestamp_field": "ts",
            "dimensions": ["item"],
            "measures": [{"field": "qty", "aggregation": "sum"}],
            "window_ms": W,
            "model": {
                "forest": {"n_trees": 20, "sample_size": 64, "shingle_size": 2, "seed": 3},
                "scoring": {"learning_points": 40, "learning_ms": 0},
            },
        }
    ]
}


def _when(window: int) -> str:
    return str(np.datetime64(T0 + window * W, "ms").astype("datetime64[s]")).replace("T", " ")


def _write_history(path: Path, bad_row: bool = False) -> None:
    rng = np.random.default_rng(5)
    lines = ["ts,item,qty"]
    for w in range(WINDOWS):
        for item, base in (("A", 10.0), ("B", 30.0)):
            level = base * (1.5 if (w // 10) % 2 else 1.0)
            if (item, w) in (("A", LABELLED_SPIKE), ("B", UNLABELLED_SPIKE)):
                level *= 6
            if item == "B" and w in BATCH:
                level *= 5
            for k in range(3):
                lines.append(f"{T0 + w * W + k * 15_000},{item},{rng.normal(level, level * 0.03) / 3:.4f}")
    if bad_row:
        lines.insert(100, f"{T0 + 30 * W},A,lots")
    path.write_text("\n".join(lines) + "\n")


def _write_labels(path: Path, label_the_b_spike: bool = False) -> None:
    rows = [
        ["A", _when(LABELLED_SPIKE), _when(LABELLED_SPIKE), "spike", "anomaly"],
        ["B", _when(BATCH[0]), _when(BATCH[-1]), "batch_job", "normal"],
    ]
    if label_the_b_spike:
        rows.append(["B", _when(UNLABELLED_SPIKE), _when(UNLABELLED_SPIKE), "spike", "anomaly"])
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "start", "end", "kind", "expect"])
        w.writerows(rows)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shop")
    _write_history(d / "history.csv")
    _write_labels(d / "labels.csv")
    _write_labels(d / "labels-b.csv", label_the_b_spike=True)
    (d / "detector.yaml").write_text(yaml.safe_dump(CONFIG))
    return d


def evaluate(d: Path, *args: str, history: str = "history.csv", labels: str = "labels.csv") -> Result:
    return CliRunner().invoke(
        main,
        [
            "evaluate",
            str(d / history),
            "--config",
            str(d / "detector.yaml"),
            "--labels",
            str(d / labels),
            "--no-progress",
            *args,
        ],
    )


def _figures(out: Path) -> dict:
    return json.loads((out / "evaluation.json").read_text())


def test_a_planted_spike_is_found_and_a_stretch_outside_every_label_is_a_false_alarm(shop: Path) -> None:
    out = shop / "out"
    res = evaluate(shop, "--out", str(out), "--warmup", "100m")
    assert res.exit_code == 0, res.output
    assert "| detector | precision | recall |" in res.stdout and "| spike | 1 |" in res.stdout
    ev = _figures(out)
    assert set(ev) >= {"detector", "baselines", "sweep", "baseline_sweep", "threshold", "settings", "labels"}
    assert ev["settings"]["warmup_ms"] == 100 * W and ev["threshold"] == 70.0
    assert ev["data"] == {
        "series": 2,
        "windows": 2 * WINDOWS,
        "counted_windows": 2 * (WINDOWS - 100),
        "events": 2 * 3 * WINDOWS,
        "bad_rows": 0,
    }
    assert ev["labels"]["judged"] == 1 and ev["labels"]["unmatched"] == 0
    det = ev["detector"]
    assert [(k["kind"], k["labels"], k["detected"], k["recall"]) for k in det["kinds"]] == [
        ("spike", 1, 1, 1.0)
    ]
    assert det["false_alarms"] >= 1 and det["alarms"] == det["true_alarms"] + det["false_alarms"]
    assert [b["name"] for b in ev["baselines"]] == ["robust z > 4", "robust z > 6"]
    z6 = ev["baselines"][1]
    # the 5x batch job lies inside its normal label; B's spike lies in no label at all
    assert z6["false_by_normal"]["batch_job"] >= 1 and z6["false_by_normal"]["other"] >= 1
    assert [p["threshold"] for p in ev["sweep"]][:2] == [30.0, 40.0] and len(ev["baseline_sweep"]) == 8

    # labelling B's spike turns its false alarm into a true one, for the detector and the baseline
    res_b = evaluate(shop, "--out", str(shop / "out-b"), "--warmup", "100m", labels="labels-b.csv")
    assert res_b.exit_code == 0, res_b.output
    ev_b = _figures(shop / "out-b")
    for before, after in ((det, ev_b["detector"]), (z6, ev_b["baselines"][1])):
        assert after["true_alarms"] == before["true_alarms"] + 1
        assert after["false_alarms"] == before["false_alarms"] - 1
        assert after["false_by_normal"]["other"] == before["false_by_normal"]["other"] - 1
    assert ev_b["detector"]["kinds"][0]["detected"] == 2

    html = (out / "evaluation.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html>") and "Plotly.newPlot" in html
    for trace in ('"name":"precision"', '"name":"recall"', '"name":"f1"', '"name":"cutstream"'):
        assert trace in html
    assert "recall per kind" in html and "precision against recall" in html


def test_threshold_rejudges_the_recorded_scores(shop: Path) -> None:
    res = evaluate(shop, "--out", str(shop / "out-100"), "--threshold", "100")
    assert res.exit_code == 0, res.output
    det = _figures(shop / "out-100")["detector"]
    assert det["name"] == "cutstream (anomalyScore > 100)" and det["alarms"] == 0


def test_bad_history_rows_are_reported_and_exit_2_with_the_report_written(shop: Path, tmp_path: Path) -> None:
    _write_history(tmp_path / "history.csv", bad_row=True)
    for name in ("labels.csv", "detector.yaml"):
        (tmp_path / name).write_bytes((shop / name).read_bytes())
    res = evaluate(tmp_path, "--out", str(tmp_path / "out"))
    assert res.exit_code == 2
    assert "1 history rows skipped:" in res.stderr and "history.csv:101: non-numeric qty 'lots'" in res.stderr
    assert _figures(tmp_path / "out")["data"]["bad_rows"] == 1


def test_history_without_a_valid_row_is_reported_and_one_line(shop: Path, tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text(f"ts,item,qty\n{T0},A,lots\n")
    for name in ("labels.csv", "detector.yaml"):
        (tmp_path / name).write_bytes((shop / name).read_bytes())
    res = evaluate(tmp_path, "--out", str(tmp_path / "out"))
    assert res.exit_code == 1 and "history.csv:2: non-numeric qty 'lots'" in res.stderr
    assert "no valid history row, so no window to evaluate" in res.stderr and "Traceback" not in res.output


def test_labels_that_match_no_series_are_a_warning(shop: Path, tmp_path: Path) -> None:
    labels = tmp_path / "nobody.csv"
    labels.write_text(f"item,start,end\nZ,{_when(10)},{_when(12)}\n")
    res = evaluate(shop, "--out", str(tmp_path / "out"), labels=str(labels))
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no label matches a series of detector 'shop' (check the dimension values and "
        f"measures), e.g. {labels}:2 (item=Z, anomaly)"
    ]


@pytest.mark.parametrize(
    ("labels", "args", "status", "message"),
    [
        (
            "item,start,end\nA,2026-03-02 01:00:00,soon\n",
            (),
            1,
            "labels.csv:2: end 'soon' is not an ISO-8601 time",
        ),
        (
            "product,start,end\nA,2026-03-02,2026-03-02\n",
            (),
            1,
            "labels.csv:1: column 'product' is not a dimension",
        ),
        ('[{"item": "A", "start": 1}]', (), 1, "labels.json:1: no end"),
        ("item,start,end\n", ("--warmup", "7x"), 2, "Invalid value for '--warmup': '7x' is not a duration"),
        ("item,start,end\n", ("--merge-gap", "-1"), 2, "Invalid value for '--merge-gap'"),
    ],
)
def test_mistakes_are_one_line_and_an_exit_status(
    shop: Path, tmp_path: Path, labels: str, args: tuple[str, ...], status: int, message: str
) -> None:
    name = "labels.json" if labels.startswith("[") else "labels.csv"
    (tmp_path / name).write_text(labels)
    res = evaluate(shop, "--out", str(tmp_path / "out"), *args, labels=str(tmp_path / name))
    assert res.exit_code == status
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_a_missing_labels_file_is_a_usage_error(shop: Path, tmp_path: Path) -> None:
    res = evaluate(shop, labels=str(tmp_path / "nope.csv"))
    assert (
        res.exit_code == 2 and "Invalid value for '--labels'" in res.output and "does not exist" in res.output
    )


@pytest.mark.slow
def test_the_short_suite_part_through_make_evals_path(tmp_path: Path) -> None:
    """What `make eval ARGS=--quick` runs: generate SHORT, `cutstream evaluate` in a child process,
    the BENCHMARKS.md section from its output (nothing is written to BENCHMARKS.md here)."""
    from cutstream.bench.evaluation import render, run_part
    from cutstream.suite import SHORT, labels_of

    run = run_part(SHORT, tmp_path)
    ev = _figures(tmp_path / "short" / "evaluation")
    assert run.evaluation == ev
    anomalies = [lab for lab in labels_of(SHORT) if lab.expect == "anomaly"]
    assert (
        ev["labels"]["judged"] == ev["labels"]["anomaly"] == len(anomalies) and ev["labels"]["unmatched"] == 0
    )
    assert ev["labels"]["kinds"] == sorted({lab.kind for lab in anomalies})
    assert ev["labels"]["normal_kinds"] == ["batch_job", "daily_peak", "weekend"]
    days_judged = SHORT.days - SHORT.warmup_days
    assert ev["data"]["series"] == 3 * SHORT.hosts
    assert ev["data"]["counted_windows"] == 3 * SHORT.hosts * days_judged * 1440
    assert ev["settings"]["warmup_ms"] == SHORT.warmup_days * 86_400_000
    text = render([("smoke run", run)], quick=True)
    assert "### `short` (smoke run)" in text and "`short`, the targets of issue 13: precision" in text
    assert run.stdout.startswith("| detector | precision | recall |") and run.stdout in text
    assert f"--warmup {SHORT.warmup_days}d" in text
