"""`cutstream compact` (merge small Parquet files) and `cutstream outbox` (undelivered alerts)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click


def _data_dir(value: Path | None) -> Path:
    return value or Path(os.environ.get("CUTSTREAM_DATA_DIR", "data"))


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="results, checkpoints and the alert outbox (default $CUTSTREAM_DATA_DIR or ./data)",
)


@click.command()
@_data_dir_option
@click.option("--detector", default=None, help="only this detector's partitions")
@click.option("--date", default=None, help="only this date partition (YYYY-MM-DD)")
@click.option(
    "--min-files",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="merge a source's files in a partition when there are at least this many",
)
@click.option("--no-progress", is_flag=True, help="no progress bar (none when stderr is no terminal)")
def compact(
    data_dir: Path | None, detector: str | None, date: str | None, min_files: int, no_progress: bool
) -> None:
    """Merge small result files (per partition and source); query results stay identical.

    Safe while workers run and readers query: see docs/ARCHITECTURE.md, "Sinks and alerts".
    """
    from cutstream.progress import count_progress
    from sinks.errors import SinkError
    from sinks.parquet import compact as run_compact

    try:
        with count_progress(not no_progress, "compact", "partitions") as on_partition:
            results = run_compact(
                _data_dir(data_dir),
                detector=detector,
                date=date,
                min_files=min_files,
                on_partition=on_partition,
            )
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    for r in results:
        click.echo(f"{r.partition}: {len(r.inputs)} files -> {r.output.name} ({r.rows} rows)")
    click.echo(f"compacted {sum(len(r.inputs) for r in results)} files into {len(results)}")


@click.command()
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per notification")
@click.option(
    "--retry-now", is_flag=True, help="make every pending notification due now (after fixing an endpoint)"
)
@click.option(
    "--requeue-dead",
    is_flag=True,
    help="put dead-lettered notifications back in the outbox, due now (after fixing the endpoint)",
)
@click.option("--hook", default=None, help="only this hook's notifications (an id as listed, e.g. webhook:…)")
def outbox(
    data_dir: Path | None, as_json: bool, retry_now: bool, requeue_dead: bool, hook: str | None
) -> None:
    """List alert notifications not yet accepted by their endpoint: pending, failing, and dead.

    A dead notification was refused permanently too often (or waited past give_up_after_s) and is
    no longer retried; --requeue-dead puts it back, and a running worker sends it within seconds.
    """
    import time

    from sinks.alerts import state_dir_for
    from sinks.alerts.outbox import Outbox, read_outbox
    from sinks.errors import SinkError

    state = state_dir_for(_data_dir(data_dir))
    if (retry_now or requeue_dead) and (state / "outbox.db").exists():
        ob = Outbox(state)
        try:
            if requeue_dead:
                click.echo(f"{ob.requeue_dead(time.time(), hook)} dead notifications requeued", err=True)
            if retry_now:
                click.echo(f"{ob.retry_now()} notifications made due now", err=True)
        finally:
            ob.close()
    try:
        got = read_outbox(state)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    if got is None:
        click.echo(f"no alert outbox under {state}", err=True)
        return
    rows = [r for r in got[0] if hook is None or r.hook == hook]
    dead = [d for d in got[1] if hook is None or d.hook == hook]
    for line in _outbox_lines(rows, dead, as_json, time.time()):
        click.echo(line)
    if not as_json:
        click.echo(f"{len(rows)} notifications waiting", err=True)
        if dead:
            click.echo(
                f"{len(dead)} notifications dead-lettered (not retried): fix the endpoint, then "
                "run again with --requeue-dead",
                err=True,
            )


def _outbox_lines(rows: list[Any], dead: list[Any], as_json: bool, now: float) -> Iterator[str]:
    """One line per waiting and dead notification: JSON, or a table row."""
    import datetime as dt
    import json

    def when(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    for r in rows:
        status = "failing" if r.attempts else "pending"
        if as_json:
            yield json.dumps(
                {
                    "id": r.id,
                    "status": status,
                    "dedupKey": r.dedup_key,
                    "hook": r.hook,
                    "detector": r.detector,
                    "kind": r.kind,
                    "attempts": r.attempts,
                    "permanentRejections": r.rejections,
                    "lastError": r.last_error,
                    "createdAt": r.created_at,
                    "nextAttemptAt": r.next_attempt_at,
                }
            )
            continue
        due = max(0.0, r.next_attempt_at - now)
        yield (
            f"{status:8} {r.kind:7} {r.detector:16} {r.hook:20} attempts={r.attempts:<3} "
            f"due_in={due:7.1f}s created={when(r.created_at)} key={r.dedup_key}"
            + (f" error={r.last_error}" if r.last_error else "")
        )
    for d in dead:
        if as_json:
            yield json.dumps(
                {
                    "id": d.id,
                    "status": "dead",
                    "dedupKey": d.dedup_key,
                    "hook": d.hook,
                    "detector": d.detector,
                    "kind": d.kind,
                    "attempts": d.attempts,
                    "permanentRejections": d.rejections,
                    "lastError": d.last_error,
                    "createdAt": d.created_at,
                    "reason": d.reason,
                    "deadAt": d.dead_at,
                }
            )
            continue
        yield (
            f"{'dead':8} {d.kind:7} {d.detector:16} {d.hook:20} attempts={d.attempts:<3} "
            f"reason={d.reason} dead_at={when(d.dead_at)} created={when(d.created_at)} key={d.dedup_key}"
            + (f" error={d.last_error}" if d.last_error else "")
        )


COMMANDS = [compact, outbox]
