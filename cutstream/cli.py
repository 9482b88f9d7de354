"""The `cutstream` command line: the one place that wires settings and parts together.

Every command imports its machinery lazily so that `cutstream --help` stays fast and a
command never pays for a part it does not use.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from cutstream import __version__

logger = logging.getLogger("cutstream")


def _setup_logging(verbose: int) -> None:
    """Text logs by default; JSON lines with ``CUTSTREAM_LOG_FORMAT=json`` (key=value pairs become fields)."""
    import os

    from cutstream.logfmt import setup_logging

    level = logging.WARNING - 10 * verbose if verbose else logging.INFO
    setup_logging(level, os.environ.get("CUTSTREAM_LOG_FORMAT", "text"))


class _Group(click.Group):
    """Turns the packages' own errors (bad config, unreachable broker, ...) into one clear line."""

    def invoke(self, ctx: click.Context) -> object:
        from detector.errors import DetectorError
        from sinks.errors import SinkError
        from streams.errors import StreamsError

        try:
            return super().invoke(ctx)
        except (StreamsError, SinkError, DetectorError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cutstream")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
def main(verbose: int) -> None:
    """Streaming anomaly detection on Kafka with a batched online Random Cut Forest."""
    _setup_logging(verbose)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="detector config file (YAML)",
)
brokers_option = click.option(
    "--brokers",
    default=None,
    envvar="CUTSTREAM_BROKERS",
    help="Kafka bootstrap servers; unset = start the embedded broker",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="results, checkpoints and the alert outbox (default ./data)",
)


@main.command()
@click.option("--port", type=int, default=None, help="listen on this loopback port (default: a free one)")
def broker(port: int | None) -> None:
    """Run the embedded Kafka-compatible broker until Ctrl-C."""
    import signal
    import threading

    from streams.broker import EmbeddedBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=port) as b:
        click.echo(f"embedded broker ready: bootstrap.servers={b.bootstrap}")
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


@main.group()
def bench() -> None:
    """Benchmarks; each prints one JSON line (`make bench` runs them all)."""


# Each area keeps its commands in its own module (click commands only; heavy imports stay
# inside the command bodies). Registered here so that the command tree is in one place.
_COMMAND_MODULES = (
    "cutstream.cli_streams",  # worker
    "cutstream.cli_detect",  # score
    "cutstream.cli_history",  # replay, backfill
    "cutstream.cli_evaluate",  # evaluate
    "cutstream.cli_sinks",  # query, compact, outbox
    "cutstream.cli_dashboard",  # dashboard
    "cutstream.demo",  # demo
)
_BENCH_MODULES = (
    "cutstream.bench.engine",
    "cutstream.bench.ingest",
    "cutstream.bench.dashboard",
    "cutstream.bench.backfill",
    "cutstream.bench.nab",
    "cutstream.bench.scaleout",
    "cutstream.bench.checkpoint",
)


def _register() -> None:
    import importlib
    import importlib.util

    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            for cmd in getattr(importlib.import_module(name), "COMMANDS", ()):
                main.add_command(cmd)
    for name in _BENCH_MODULES:
        if importlib.util.find_spec(name) is not None:
            for cmd in getattr(importlib.import_module(name), "COMMANDS", ()):
                bench.add_command(cmd)


_register()
