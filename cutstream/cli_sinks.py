"""`cutstream compact` (merge small Parquet files) and `cutstream outbox` (pending alert notifications)."""

from __future__ import annotations

import os
from pathlib import Path

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
def compact(data_dir: Path | None, detector: str | None, date: str | None, min_files: int) -> None:
    """Merge small result files (per partition and source); query results stay identical.

    Safe while workers run and readers query: see docs/ARCHITECTURE.md, "Sinks and alerts".
    """
    from sinks.errors import SinkError
    from sinks.parquet import compact as run_compact

    try:
        results = run_compact(_data_dir(data_dir), detector=detector, date=date, min_files=min_files)
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
def outbox(data_dir: Path | None, as_json: bool, retry_now: bool) -> None:
    """List alert notifications not yet accepted by their endpoint (pending or failing)."""
    import datetime as dt
    import json
    import time

    from sinks.alerts import state_dir_for
    from sinks.alerts.outbox import Outbox, read_pending

    state = state_dir_for(_data_dir(data_dir))
    if retry_now and (state / "outbox.db").exists():
        ob = Outbox(state)
        click.echo(f"{ob.retry_now()} notifications made due now", err=True)
        ob.close()
    rows = read_pending(state)
    if rows is None:
        click.echo(f"no alert outbox under {state}", err=True)
        return
    now = time.time()
    for r in rows:
        status = "failing" if r.attempts else "pending"
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": r.id,
                        "status": status,
                        "dedupKey": r.dedup_key,
                        "hook": r.hook,
                        "detector": r.detector,
                        "kind": r.kind,
                        "attempts": r.attempts,
                        "lastError": r.last_error,
                        "createdAt": r.created_at,
                        "nextAttemptAt": r.next_attempt_at,
                    }
                )
            )
            continue
        created = dt.datetime.fromtimestamp(r.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        due = max(0.0, r.next_attempt_at - now)
        click.echo(
            f"{status:8} {r.kind:7} {r.detector:16} {r.hook:20} attempts={r.attempts:<3} "
            f"due_in={due:7.1f}s created={created} key={r.dedup_key}"
            + (f" error={r.last_error}" if r.last_error else "")
        )
    if not as_json:
        click.echo(f"{len(rows)} notifications waiting", err=True)


COMMANDS = [compact, outbox]
