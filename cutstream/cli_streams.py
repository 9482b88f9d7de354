"""Stream commands: ``cutstream worker`` (and, later, replay and backfill)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from cutstream.cli import brokers_option, config_option, data_dir_option

if TYPE_CHECKING:
    from streams.sensors import Sensor


@click.command()
@config_option
@brokers_option
@data_dir_option
@click.option(
    "--backend",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="array backend of the detector (gpu needs the cutstream[gpu] extra)",
)
@click.option("--group", "group_id", default=None, help="consumer group (default: group_id of the config)")
@click.option("--max-batch", type=int, default=10_000, show_default=True, help="messages per consume() call")
@click.option(
    "--poll-timeout",
    type=float,
    default=0.1,
    show_default=True,
    help="longest wait for a batch, in seconds (bounds the latency at low traffic)",
)
@click.option(
    "--parquet-interval",
    type=float,
    default=2.0,
    show_default=True,
    help="write results to Parquet at least this often, in seconds",
)
@click.option(
    "--checkpoint-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="checkpoint and commit each partition this often, in seconds",
)
@click.option(
    "--checkpoint-events",
    type=int,
    default=0,
    show_default=True,
    help="also checkpoint a partition after this many events (0 = only by time)",
)
@click.option(
    "--series-capacity",
    type=int,
    default=1024,
    show_default=True,
    help="series each detector preallocates model memory for (grows beyond; avoids pauses while it grows)",
)
@click.option(
    "--warm-start",
    "warm_start",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="models from `cutstream backfill --warm-start-out` (repeatable, one file per detector)",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    envvar="CUTSTREAM_METRICS_PORT",
    help="serve /metrics, /healthz and /readyz on this port (0 = any free port; unset = no server)",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    envvar="CUTSTREAM_METRICS_HOST",
    help="address of the metrics server (0.0.0.0 in a container)",
)
@click.option(
    "--from",
    "start_from",
    default=None,
    metavar="TIME",
    help="partitions without a checkpoint start at the first record produced at or after TIME (its "
    "Kafka timestamp; ISO-8601, UTC unless it names a zone); uses offsets_for_times: Apache Kafka, "
    "not the embedded broker",
)
@click.option(
    "--results-guarantee",
    type=click.Choice(["auto", "exactly_once", "at_least_once"]),
    default="auto",
    show_default=True,
    envvar="CUTSTREAM_RESULTS_GUARANTEE",
    help="the results topic: exactly_once through Kafka transactions (read it with "
    "isolation.level=read_committed), at_least_once, or auto = exactly_once where the broker has "
    "transactions (not the embedded broker); Parquet is exactly-once either way",
)
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="write counters and the assigned partitions as JSON to this file about once a second",
)
def worker(**options: Any) -> None:
    """Consume events, detect anomalies, write results to the results topic and Parquet.

    Joins the consumer group of the config; start more workers (here or on other machines) to
    split the partitions. Without --brokers (or CUTSTREAM_BROKERS / `brokers:` in the config) it
    starts the embedded broker. SIGTERM or Ctrl-C checkpoints every partition and leaves the group.
    """
    run_worker(options)


def time_option(name: str, text: str | None) -> int | None:
    """``--from`` text → epoch ms (None when absent); a usage error names the option."""
    from streams.timestamps import iso_to_ms

    if text is None:
        return None
    ms = iso_to_ms(text)
    if ms is None:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 time (e.g. 2026-11-01T00:00)", param_hint=name)
    return ms


def run_worker(options: Mapping[str, Any], sensors: Sequence[Sensor] = ()) -> None:
    """The body of ``cutstream worker``, from its options (``cutstream.testing`` adds sensors)."""
    import signal
    import threading

    from cutstream.config import load_config
    from streams.config import WorkerSettings
    from streams.errors import StreamsError
    from streams.metrics import MetricsConfig
    from streams.worker import Worker

    o = options
    if o["config_path"] is None:
        raise click.UsageError("--config is required: the detectors to run")
    try:
        app = load_config(
            o["config_path"], brokers=o["brokers"], data_dir=o["data_dir"], group_id=o["group_id"]
        )
        settings = WorkerSettings(
            max_batch=o["max_batch"],
            poll_timeout_s=o["poll_timeout"],
            parquet_interval_s=o["parquet_interval"],
            checkpoint_interval_s=o["checkpoint_interval"],
            checkpoint_every_events=o["checkpoint_events"],
            series_capacity=o["series_capacity"],
            warm_start=o["warm_start"],
            status_file=o["status_file"],
            start_from_ms=time_option("--from", o["start_from"]),
            results_guarantee=o["results_guarantee"],
        )
        metrics = MetricsConfig(port=o["metrics_port"], host=o["metrics_host"])
        w = Worker(app, o["backend"], settings, metrics, sensors)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        w.run(stop)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    c = w.counters()
    click.echo(
        f"worker stopped: events={c.events_in} rejects={sum(c.rejects.values())} "
        f"windows={c.windows_closed} results={c.results_written}",
        err=True,
    )


COMMANDS = [worker]
