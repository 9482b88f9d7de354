"""`cutstream demo`: the whole pipeline on one machine.

An embedded broker (unless ``--brokers``), the demo topics, a data generator that replays
simulated hours in compressed time, a worker, the Parquet sink and the dashboard. It runs until
Ctrl-C or ``--duration`` seconds, then stops every part cleanly and prints what it found.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from streams.generator import Spike

logger = logging.getLogger(__name__)

#: The demo's detectors, one per scenario (the same shape as a detectors.yaml entry). Their event time
#: is simulated from 2026-01-01 at hours per second, so it is no wall clock: the future guard is off.
SCENARIOS: dict[str, dict[str, Any]] = {
    "bookstore": {
        "name": "bookstore",
        "topic": "cutstream.demo.orders",
        "timestamp_field": "timestamp",
        "dimensions": ["product_name"],
        "measures": [{"field": "quantity", "aggregation": "sum"}],
        "window_ms": 3_600_000,
        "idle_timeout_ms": 5_000,
        "max_future_ms": 0,
    },
    "hosts": {
        "name": "hosts",
        "topic": "cutstream.demo.hosts",
        "timestamp_field": "timestamp",
        "dimensions": ["host", "region"],
        "measures": [{"field": "cpu", "aggregation": "avg"}, {"field": "latency_ms", "aggregation": "avg"}],
        "window_ms": 3_600_000,
        "idle_timeout_ms": 5_000,
        "max_future_ms": 0,
    },
}

#: Simulated hours per wall-clock second: ~4 minutes of demo show ~2 weeks of a bookstore.
DEFAULT_SPEED = {"bookstore": 2.0, "hosts": 1.0}

#: librdkafka group settings that make joins on the embedded broker take ~3 s (DESIGN.md).
DEMO_GROUP_SETTINGS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}


def _start_dashboard(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    from streams.broker import _die_with_parent

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cutstream",
            "dashboard",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--refresh-ms",
            "3000",
        ],
        preexec_fn=_die_with_parent,
    )


def _produce(
    bootstrap: str,
    topic: str,
    scenario: str,
    speed: float,
    stop: threading.Event,
    extra: dict[str, str],
    stats: dict[str, Any],
) -> None:
    """Publish simulated hours at ``speed`` hours per second until ``stop`` (or the scenario ends)."""
    from confluent_kafka import Producer

    from sinks.kafka import produce_many
    from streams import generator

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": "20",
            "enable.idempotence": "true",
            **extra,
        }
    )
    hours = 24 * 365
    batches = generator.bookstore(hours) if scenario == "bookstore" else generator.hosts(hours)
    t_start = time.monotonic()
    for i, batch in enumerate(batches):
        due = t_start + i / speed
        if stop.wait(max(0.0, due - time.monotonic())):
            break
        keys, values = zip(*batch.messages, strict=True) if batch.messages else ((), ())
        produce_many(producer, topic, values, keys)
        producer.poll(0)
        stats["events"] += len(batch.messages)
        stats["hours"] += 1
        stats["spikes"].extend(batch.spikes)
    producer.flush(30)


def _wait(
    stop: threading.Event,
    duration: float,
    worker: threading.Thread,
    dashboard: subprocess.Popen[bytes] | None,
) -> None:
    """Until Ctrl-C, SIGTERM or ``duration`` seconds (0: no limit); worker and dashboard must stay up."""
    deadline = time.monotonic() + duration if duration else None
    try:
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            stop.wait(1.0 if remaining is None else min(1.0, remaining))
            if not worker.is_alive():
                raise click.ClickException("the worker stopped unexpectedly; see the log above")
            if dashboard is not None and dashboard.poll() is not None:
                raise click.ClickException("the dashboard stopped unexpectedly; see the log above")
    except KeyboardInterrupt:
        click.echo("stopping...")


def _stop_all(
    stop: threading.Event,
    threads: list[threading.Thread],
    dashboard: subprocess.Popen[bytes] | None,
    broker: Any,
) -> None:
    stop.set()
    for t in threads:
        t.join(60)
    if dashboard is not None:
        dashboard.terminate()
        try:
            dashboard.wait(10)
        except subprocess.TimeoutExpired:
            dashboard.kill()
    if broker is not None:
        broker.stop()


def _check_port(port: int) -> None:
    """Refuse a dashboard port that is taken before anything starts (the URL would be someone else's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise click.ClickException(
                f"port {port} on 127.0.0.1 is in use (another dashboard or demo?): "
                f'pick another with --port (make demo ARGS="--port {port + 1}")'
            ) from None


#: A data directory the demo wrote; a fresh embedded broker means its contents are stale.
DEMO_MARK = ".cutstream-demo"
_DEMO_ENTRIES = {DEMO_MARK, "results", "checkpoints", "alerts", "status", "inbox"}


def _written_by_a_demo(data_dir: Path) -> bool:
    if (data_dir / DEMO_MARK).exists():
        return True
    # a data dir of a demo from before the mark: only the demo's folders, its detectors and groups
    entries = {p.name for p in data_dir.iterdir()}
    results = {p.name for p in (data_dir / "results").glob("*")}
    groups = {p.name for p in (data_dir / "checkpoints").glob("*")}
    return (
        entries <= _DEMO_ENTRIES
        and results <= {f"detector={name}" for name in SCENARIOS}
        and all(g.startswith("cutstream-demo-") for g in groups)
    )


def _prepare_data_dir(data_dir: Path, embedded: bool) -> str:
    """Tie the data directory to the broker: a fresh embedded broker starts from a fresh directory.

    The embedded broker keeps nothing between runs, so the checkpoints of an earlier demo would
    point at offsets of topics that no longer exist (and its results would mix with the new ones).
    Returns a line saying what was done.
    """
    if data_dir.exists() and any(data_dir.iterdir()):
        if not _written_by_a_demo(data_dir):
            raise click.ClickException(
                f"{data_dir} holds files that no demo wrote; the demo starts from an empty directory: "
                "pass a new one with --data-dir"
            )
        if not embedded:
            data_dir.joinpath(DEMO_MARK).touch()
            return f"reusing {data_dir}: its checkpoints resume the demo's consumer group on these brokers"
        for entry in data_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        note = (
            f"starting fresh: removed the previous demo run from {data_dir} "
            "(the embedded broker keeps nothing between runs)"
        )
    else:
        note = f"results, checkpoints and alerts go to {data_dir}"
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.joinpath(DEMO_MARK).touch()
    return note


def _summary(data_dir: Path, spikes: list[Spike]) -> str:
    """Found k of n injected spikes (those scored after learning), m other alarms; honest about the rest."""
    from sinks import query

    rows = query.run_sql(
        data_dir,
        "SELECT list_sort([d.name || '=' || d.value FOR d IN dimensionList]) AS dims, "
        "epoch_ms(windowStart) AS start, max(anomalyDecision) AS decision, "
        "bool_or(modelStage = 'INFERENCE') AS ready, count(*) AS n FROM results GROUP BY ALL",
    ).to_pylist()
    if not rows:
        return "no results yet (the run was too short for a window to close)"
    windows = {(tuple(r["dims"]), r["start"]): (r["decision"], r["ready"]) for r in rows}
    injected = {(tuple(sorted(f"{k}={v}" for k, v in s.dims)), s.window_start_ms) for s in spikes}
    scored = [w for w in injected if w in windows and windows[w][1]]
    found = sum(1 for w in scored if windows[w][0] == 1)
    learning = sum(1 for w in injected if w in windows and not windows[w][1])
    pending = len(injected) - len(scored) - learning
    other = sum(1 for w, (decision, _) in windows.items() if decision == 1 and w not in injected)
    series = len({dims for dims, _ in windows})
    parts = [
        f"{sum(r['n'] for r in rows)} results for {series} series",
        f"found {found} of {len(scored)} injected spikes scored after learning"
        if spikes
        else "no spike injected yet (they start after 3 simulated days: run longer or raise --speed)",
        f"{other} other alarm{'s' if other != 1 else ''}",
    ]
    if learning:
        parts.append(f"{learning} spike{'s' if learning != 1 else ''} fell in the learning period")
    if pending:
        parts.append(f"{pending} not scored yet when the demo stopped")
    return "; ".join(parts)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="where the Parquet results, checkpoints and alert outbox go",
)
@click.option("--port", type=int, default=8050, show_default=True, help="dashboard port on 127.0.0.1")
@click.option(
    "--duration", type=float, default=0.0, help="stop by itself after this many seconds (0 = Ctrl-C)"
)
@click.option(
    "--scenario",
    type=click.Choice(sorted(SCENARIOS)),
    default="bookstore",
    show_default=True,
    help="bookstore: 2 series with injected spikes; hosts: 1,000 hosts x cpu/latency",
)
@click.option("--speed", type=float, default=None, help="simulated hours per second")
@click.option(
    "--brokers",
    default=None,
    envvar="CUTSTREAM_BROKERS",
    help="use this Kafka instead of the embedded broker",
)
@click.option("--no-dashboard", is_flag=True, help="run without the dashboard")
@click.option("--backend", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
def demo(
    data_dir: Path,
    port: int,
    duration: float,
    scenario: str,
    speed: float | None,
    brokers: str | None,
    no_dashboard: bool,
    backend: str,
) -> None:
    """Run the whole pipeline on one machine: broker, generator, worker, Parquet, dashboard."""
    from cutstream.config import load_config
    from cutstream.demo_inbox import DemoInbox
    from streams.broker import EmbeddedBroker
    from streams.config import WorkerSettings
    from streams.kafka import ensure_topics
    from streams.worker import Worker

    if not no_dashboard:
        _check_port(port)
    note = _prepare_data_dir(data_dir, embedded=not brokers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker = None if brokers else EmbeddedBroker().start()
    bootstrap = brokers or (broker.bootstrap if broker else "")
    inbox = DemoInbox(data_dir / "inbox").start()
    spec = {**SCENARIOS[scenario], "alerts": inbox.alerts_config(f"http://127.0.0.1:{port}")}
    dashboard: subprocess.Popen[bytes] | None = None
    threads: list[threading.Thread] = []
    stats: dict[str, Any] = {"events": 0, "hours": 0, "spikes": []}
    try:
        app = load_config(
            None,
            brokers=bootstrap,
            data_dir=data_dir,
            detectors=[spec],
            group_id=f"cutstream-demo-{scenario}",
            kafka=DEMO_GROUP_SETTINGS,
        )
        ensure_topics(bootstrap, [spec["topic"], app.results_topic], partitions=4)
        ensure_topics(bootstrap, [f"{spec['topic']}.dlq"], partitions=1)
        (data_dir / "status").mkdir(exist_ok=True)
        settings = WorkerSettings(status_file=str(data_dir / "status" / "demo-worker.json"))
        worker = Worker(app, backend=backend, settings=settings)
        threads.append(threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True))
        threads.append(
            threading.Thread(
                target=_produce,
                name="generator",
                daemon=True,
                args=(bootstrap, spec["topic"], scenario, speed or DEFAULT_SPEED[scenario], stop, {}, stats),
            )
        )
        for t in threads:
            t.start()
        if not no_dashboard:
            dashboard = _start_dashboard(data_dir, port)
        click.echo(f"cutstream demo ({scenario}) running: broker {bootstrap}; {note}")
        click.echo(
            f"alerts: webhook {inbox.webhook_url} and SMTP 127.0.0.1:{inbox.smtp_port}, "
            f"kept in {inbox.directory}/ (cutstream outbox --data-dir {data_dir})"
        )
        if not no_dashboard:
            click.echo(f"dashboard: http://127.0.0.1:{port}")
        click.echo("stop with Ctrl-C" if not duration else f"stopping by itself after {duration:.0f} s")
        _wait(stop, duration, threads[0], dashboard)
    finally:
        _stop_all(stop, threads, dashboard, broker)
        inbox.stop()
    click.echo(
        f"published {stats['events']} events over {stats['hours']} simulated hours "
        f"({len(stats['spikes'])} injected spikes)"
    )
    click.echo(f"results: {_summary(data_dir, stats['spikes'])}")
    click.echo(f"alerts received: {inbox.webhooks} webhooks, {inbox.emails} emails in {inbox.directory}/")


COMMANDS = [demo]
