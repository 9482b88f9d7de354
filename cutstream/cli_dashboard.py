"""`cutstream dashboard` (serve the Dash app) and `cutstream query` (SQL over the results)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

logger = logging.getLogger(__name__)


def _host_names(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """``--allowed-host`` values; the environment variable may list several, comma- or space-separated."""
    return tuple(name for value in values for name in value.replace(",", " ").split())


def _data_dir(value: Path | None) -> Path:
    import os

    return value or Path(os.environ.get("CUTSTREAM_DATA_DIR", "data"))


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="results directory root (default $CUTSTREAM_DATA_DIR or ./data)",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to bind; anything but loopback needs --token",
)
@click.option("--port", type=int, default=8050, show_default=True)
@click.option(
    "--refresh-ms",
    type=click.IntRange(min=250),
    default=5000,
    show_default=True,
    help="live refresh interval of the page",
)
@click.option(
    "--token",
    envvar="CUTSTREAM_DASHBOARD_TOKEN",
    default=None,
    help="access token (also $CUTSTREAM_DASHBOARD_TOKEN): Bearer header or basic-auth password",
)
@click.option(
    "--allowed-host",
    "allowed_host_names",
    multiple=True,
    envvar="CUTSTREAM_DASHBOARD_ALLOWED_HOSTS",
    callback=_host_names,
    metavar="NAME",
    help="a Host name the dashboard answers besides the loopback names and the bound address "
    "(repeatable; also $CUTSTREAM_DASHBOARD_ALLOWED_HOSTS, comma-separated); *.example.com for "
    "subdomains, * for any name (turns the DNS-rebinding guard off)",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=8, show_default=True, help="waitress worker threads"
)
@click.option(
    "--metrics-url",
    "metrics_urls",
    multiple=True,
    help="a worker's Prometheus /metrics URL, for the lag KPI (repeatable)",
)
def dashboard(
    data_dir: Path | None,
    host: str,
    port: int,
    refresh_ms: int,
    token: str | None,
    threads: int,
    metrics_urls: tuple[str, ...],
    allowed_host_names: tuple[str, ...],
) -> None:
    """Serve the dashboard over a results directory (waitress, a production WSGI server)."""
    from waitress import serve

    from dashboard.app import create_app
    from dashboard.security import LOOPBACK_HOSTS, WILDCARD_BINDS, allowed_hosts

    root = _data_dir(data_dir)
    if host not in LOOPBACK_HOSTS and not token:
        raise click.UsageError(
            f"refusing to serve the dashboard on {host} without a token: pass --token or set "
            "CUTSTREAM_DASHBOARD_TOKEN (or bind to 127.0.0.1)"
        )
    try:
        hosts = allowed_hosts(host, allowed_host_names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allowed-host") from None
    if not (root / "results").is_dir():
        logger.warning("no results yet data_dir=%s (the page fills in when a worker writes some)", root)
    app = create_app(
        root,
        refresh_ms=refresh_ms,
        auth=token,
        metrics_urls=metrics_urls,
        warm_up=True,
        allowed_hosts=hosts,
    )
    click.echo(
        f"cutstream dashboard on http://{host}:{port}/ over {root}" + (" (token required)" if token else ""),
        err=True,
    )
    if host.strip("[]") in WILDCARD_BINDS and not allowed_host_names:
        click.echo(
            f"bound to {host}: only loopback Host names are answered; add --allowed-host NAME for the "
            "names clients use to reach this machine",
            err=True,
        )
    serve(app.server, host=host, port=port, threads=threads, ident="cutstream")


@click.command()
@click.argument("sql")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="results directory root (default $CUTSTREAM_DATA_DIR or ./data)",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@click.option("--max-rows", type=int, default=100, show_default=True, help="rows shown by --format table")
def query(sql: str, data_dir: Path | None, fmt: str, max_rows: int) -> None:
    """Run SQL over the results: `cutstream query "SELECT count(*) FROM results"`.

    `results` is a view over every result file (the record's fields plus the partition columns
    `detector` and `date`).
    """
    import sys

    from sinks.query import QueryError, run_sql

    root = _data_dir(data_dir)
    if not root.is_dir():
        raise click.ClickException(
            f"no data directory {root}: pass the one the worker or demo writes to "
            "(--data-dir or CUTSTREAM_DATA_DIR)"
        )
    try:
        table = run_sql(root, sql)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    if not (root / "results").is_dir():
        click.echo(f"note: {root} holds no results yet (is it the worker's --data-dir?)", err=True)
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, sys.stdout.buffer)
    elif fmt == "json":
        import json

        for row in table.to_pylist():
            click.echo(json.dumps(row, default=str))
    else:
        click.echo(_render_table(table, max_rows))


def _render_table(table: object, max_rows: int) -> str:
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    names = table.column_names
    rows = [["" if v is None else str(v) for v in r.values()] for r in table.slice(0, max_rows).to_pylist()]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    line = " | ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))
    out = [line, "-+-".join("-" * w for w in widths)]
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    if table.num_rows > max_rows:
        out.append(f"... {table.num_rows - max_rows} more rows (use --format csv for all)")
    else:
        out.append(f"({table.num_rows} rows)")
    return "\n".join(out)


COMMANDS = [dashboard, query]
