"""`cutstream replay` and `cutstream backfill`: history through the same path as live events."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from cutstream.config import AppConfig
    from streams.config import DetectorSpec

#: Exit status when some history rows were skipped (reported on stderr: file and line, or row).
EXIT_BAD_ROWS = 2


def _pick_detector(app: AppConfig, name: str | None) -> DetectorSpec:
    if not app.detectors:
        raise click.UsageError("the config names no detectors")
    if name is None:
        if len(app.detectors) > 1:
            raise click.UsageError(
                f"the config has several detectors; pick one with --detector "
                f"({', '.join(d.name for d in app.detectors)})"
            )
        return app.detectors[0]
    for d in app.detectors:
        if d.name == name:
            return d
    raise click.UsageError(
        f"no detector named {name!r} in the config; it has: {', '.join(d.name for d in app.detectors)}"
    )


def _report_bad(bad: Sequence[object], limit: int = 20) -> None:
    if not bad:
        return
    click.echo(f"{len(bad)} history rows skipped:", err=True)
    for b in bad[:limit]:
        click.echo(f"  {b}", err=True)
    if len(bad) > limit:
        click.echo(f"  ... and {len(bad) - limit} more", err=True)


def exit_if_bad(bad: Sequence[object]) -> None:
    """The last line when rows were skipped: how many, and exit status 2."""
    if bad:
        click.echo(
            f"{len(bad)} history rows skipped (listed above; fix or drop them): exit status {EXIT_BAD_ROWS}",
            err=True,
        )
        sys.exit(EXIT_BAD_ROWS)


def _history_options(f: Callable[..., None]) -> Callable[..., None]:
    """PATH, --config and --detector: which history, read how."""
    f = click.option("--detector", default=None, help="which detector of the config (when it has several)")(f)
    f = click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="detector config: the timestamp, dimension and measure columns, windows and model",
    )(f)
    return click.argument("path", type=click.Path(exists=True, path_type=Path))(f)


@click.command()
@_history_options
@click.option("--topic", default=None, help="target topic (default: the detector's topic)")
@click.option("--brokers", default=None, envvar="CUTSTREAM_BROKERS", help="Kafka bootstrap servers")
@click.option("--speed", type=float, default=None, help="N x real time, keeping the gaps between events")
@click.option("--as-fast-as-possible", "fast", is_flag=True, help="no pacing (the default without --speed)")
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="position file for resuming (default: .<path>.replay-<topic>.json beside the input)",
)
@click.option(
    "--from",
    "start_from",
    default=None,
    metavar="TIME",
    help="leave out rows whose event time is before TIME (ISO-8601, UTC unless it names a zone)",
)
@click.option("--no-progress", is_flag=True, help="no progress bar")
def replay(
    path: Path,
    config_path: Path,
    detector: str | None,
    topic: str | None,
    brokers: str | None,
    speed: float | None,
    fast: bool,
    state_file: Path | None,
    start_from: str | None,
    no_progress: bool,
) -> None:
    """Publish CSV/Parquet history (a file or a directory) into Kafka with its original event times."""
    from cutstream.cli_streams import time_option
    from cutstream.config import load_config
    from streams.replay import replay as run_replay

    if speed is not None and fast:
        raise click.UsageError("--speed and --as-fast-as-possible exclude each other")
    if speed is not None and speed <= 0:
        raise click.UsageError("--speed must be positive")
    # the config's topic is where replay publishes unless --topic names one
    app = load_config(config_path, topic_required=topic is None, brokers=brokers)
    spec = _pick_detector(app, detector)
    if app.brokers is None:
        raise click.UsageError(
            "replay needs a broker: --brokers or CUTSTREAM_BROKERS (the embedded broker "
            "keeps nothing after this command exits)"
        )
    target = topic or spec.topic
    report = run_replay(
        path,
        spec,
        app.brokers,
        target,
        speed=speed,
        extra=dict(app.kafka),
        state_file=state_file,
        progress=not no_progress,
        start_ms=time_option("--from", start_from),
    )
    if report.already_complete:
        click.echo(
            f"nothing to replay: an earlier replay sent all of {path} to {target} (its position file is "
            f"{report.state_file}); delete that file to replay from the start"
        )
        return
    _report_bad(report.bad)
    resumed = f" (resumed; {report.skipped_already_sent} already in the topic)" if report.resumed_from else ""
    before = f", {report.skipped_before_from} before --from left out" if report.skipped_before_from else ""
    click.echo(f"replayed {report.sent} events into {target}{resumed}{before}")
    exit_if_bad(report.bad)


@click.command()
@_history_options
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the Parquet results go (default: the config's data_dir)",
)
@click.option("--backend", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option(
    "--warm-start-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also save every series' model here, for `cutstream worker --warm-start`",
)
@click.option(
    "--no-results", is_flag=True, help="only build the models (with --warm-start-out); write no results"
)
@click.option("--no-progress", is_flag=True, help="no progress bar (none when stderr is no terminal)")
def backfill(
    path: Path,
    config_path: Path,
    detector: str | None,
    data_dir: Path | None,
    backend: str,
    warm_start_out: Path | None,
    no_results: bool,
    no_progress: bool,
) -> None:
    """Score CSV/Parquet history straight into Parquet results, without Kafka (same path as the worker)."""
    from cutstream.config import load_config
    from cutstream.progress import rows_progress
    from streams.backfill import backfill as run_backfill
    from streams.backfill import save_warm_start

    app = load_config(config_path, topic_required=False, data_dir=data_dir)
    spec = _pick_detector(app, detector)
    with rows_progress(path, not no_progress, "backfill") as on_rows:
        report, det = run_backfill(
            path, spec, app.data_dir, backend=backend, write=not no_results, on_rows=on_rows
        )
    _report_bad(report.bad)
    click.echo(
        f"backfilled {report.events} events into {report.results} results "
        f"({report.anomalies} anomalies) in {report.seconds:.1f} s ({report.events_per_s:,.0f} events/s); "
        f"{report.files_written} files under {app.data_dir}/results"
    )
    if warm_start_out is not None:
        n = save_warm_start(det, spec, warm_start_out)
        click.echo(f"saved the models of {n} series to {warm_start_out}")
    exit_if_bad(report.bad)


COMMANDS = [replay, backfill]
