"""`cutstream evaluate`: a labelled backtest on the user's own history (the figures: evaluate.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cutstream.cli_history import _history_options, _pick_detector, _report_bad, exit_if_bad
from cutstream.progress import rows_progress

if TYPE_CHECKING:
    from cutstream.evaluate import Evaluation

_EPILOG = """\b
Exit status:
  0  evaluated
  1  an input that cannot be used: the config, a history file, the labels file
     (one line naming the file and line)
  2  a mistake on the command line (a missing file, --warmup that is not a
     duration), or history rows skipped (reported with their row numbers, as
     `cutstream backfill` does; the evaluation still ran and was written)
"""


class _Duration(click.ParamType):
    """``7d``, ``12h``, ``30m``, ``90s``, ``250ms`` or ms as a number → ms."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from cutstream.durations import parse_duration_ms

        if isinstance(value, int):
            return value
        try:
            return parse_duration_ms(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _warn_labels(ev: Evaluation, detector: str) -> None:
    """Labels that judge nothing: one warning line each kind of trouble (the figures still stand)."""
    lab = ev.labels
    unmatched: list[str] = lab["unmatched_labels"]
    if not lab["total"]:
        click.echo("warning: the labels file holds no labels: every alarm counts as false", err=True)
    elif len(unmatched) == lab["total"]:
        click.echo(
            f"warning: no label matches a series of detector {detector!r} (check the dimension values "
            f"and measures), e.g. {unmatched[0]}",
            err=True,
        )
    elif unmatched:
        more = f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""
        click.echo(
            f"warning: {len(unmatched)} of {lab['total']} labels match no series: "
            f"{'; '.join(unmatched[:3])}{more}",
            err=True,
        )
    if lab["anomaly"] and not lab["judged"] and len(unmatched) < lab["total"]:
        click.echo("warning: every matching anomaly label ends inside the warm-up (--warmup)", err=True)


def _summary(ev: Evaluation, scoring_s: float) -> str:
    d, lab, t = ev.data, ev.labels, ev.timings
    return (
        f"{d['windows']:,} windows of {d['series']:,} series ({d['counted_windows']:,} after the "
        f"warm-up); {lab['judged']} anomaly labels judged ({lab['anomaly']} anomaly, {lab['normal']} "
        f"normal in the file); scoring {scoring_s:.1f} s, figures {t['metrics_s']:.1f} s "
        f"(robust z {t['robust_z_s']:.1f} s)"
    )


@click.command(epilog=_EPILOG)
@_history_options
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="labelled stretches: CSV with a header (dimension columns, start, end; optional measure, "
    "kind, expect=anomaly|normal) or a JSON list of such objects",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="where evaluation.json and evaluation.html go",
)
@click.option(
    "--warmup",
    type=_Duration(),
    default="0",
    show_default=True,
    help="leave out each series' first stretch (e.g. 7d, 12h, 30m, 90s, 250ms)",
)
@click.option(
    "--merge-gap",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="flags of a series at most this many unflagged windows apart form one alarm",
)
@click.option(
    "--tolerance",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="an alarm up to this many windows after a label's end still finds it",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 100),
    default=None,
    help="judge anomalyScore above this instead of the recorded decisions (suppression ran at the "
    "configured threshold)",
)
@click.option("--backend", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("--no-progress", is_flag=True, help="no progress bar")
def evaluate(
    path: Path,
    config_path: Path,
    detector: str | None,
    labels_path: Path,
    out_dir: Path,
    warmup: int,
    merge_gap: int,
    tolerance: int,
    threshold: float | None,
    backend: str,
    no_progress: bool,
) -> None:
    """Backtest a detector on labelled history: precision, recall per kind, delays, false alarms.

    PATH is history as for `cutstream backfill` (CSV/Parquet file or directory); it is scored
    through the same path and nothing is written but the report. A robust z-score baseline is
    measured on the same windows. Prints the tables; writes OUT/evaluation.json and
    OUT/evaluation.html.
    """
    from cutstream import evaluate as backtest
    from cutstream.config import load_config

    app = load_config(config_path, topic_required=False)
    spec = _pick_detector(app, detector)
    try:
        labels = backtest.load_labels(labels_path, spec.dimensions, [m.field for m in spec.measures])
        t0 = time.perf_counter()
        with rows_progress(path, not no_progress, "evaluate") as on_rows:
            scored, report = backtest.score_history(path, spec, backend=backend, on_rows=on_rows)
        scoring_s = time.perf_counter() - t0
        _report_bad(report.bad)
        if scored is None:
            raise backtest.EvaluateError(f"{path}: no valid history row, so no window to evaluate")
        ev = backtest.evaluate_scored(
            scored,
            labels,
            configured_threshold=spec.model.scoring.threshold,
            threshold=threshold,
            merge_gap=merge_gap,
            tolerance=tolerance,
            warmup_ms=warmup,
        )
    except backtest.EvaluateError as exc:
        raise click.ClickException(str(exc)) from exc
    _warn_labels(ev, spec.name)
    ev.timings["scoring_s"] = round(scoring_s, 3)
    ev.data["events"] = report.events
    ev.data["bad_rows"] = len(report.bad)
    click.echo(backtest.table(ev))
    click.echo(_summary(ev, scoring_s), err=True)
    try:
        json_path = backtest.write_json(ev, out_dir / "evaluation.json")
        html_path = backtest.write_plot(ev, out_dir / "evaluation.html")
    except OSError as exc:
        raise click.ClickException(f"cannot write the report under {out_dir}: {exc}") from exc
    click.echo(f"wrote {json_path} and {html_path}", err=True)
    exit_if_bad(report.bad)


COMMANDS = [evaluate]
