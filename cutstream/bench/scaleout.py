"""`cutstream bench scaleout`: throughput of 1 vs 2 (or more) worker processes in one consumer group.

Each run uses a fresh 12-partition topic on the embedded broker and a fresh group. The worker
processes (`python -m cutstream worker`) start first, and the run waits until the group is stable:
every partition assigned, disjoint. Then the whole stream is produced as fast as the producer goes
(messages built beforehand), and the clock runs until the workers' status files show every event
consumed and every window closed. Throughput = events / that time. The status files are written
about once a second, so a run should last well over 10 s for the figure to be good to a few percent.

Before the clock starts, each worker scores a few windows of a second, warm-up detector, so that
process start-up (numba loading the cached kernels, first allocations) is not measured; each
worker runs with ``NUMBA_NUM_THREADS=1`` (one core per worker, as docs/deployment.md advises).
The broker, the producer and the workers share the machine. With 2 workers on 2 cores, the ratio
also shows what the broker and the producer take from the cores.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click

PARTITIONS = 12
WINDOW_MS = 1_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
#: Group timing that makes joins on the embedded broker take about a second (../shared/DESIGN.md).
FAST_GROUP = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "500"}


def build_stream(n_series: int, n_windows: int, per_window: int) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of ~60-byte JSON events, time-ordered: ``per_window`` events per series per window."""
    out: list[tuple[bytes, bytes]] = []
    step = WINDOW_MS // (per_window + 1)
    for w in range(n_windows):
        for i in range(n_series):
            host = f"h{i}"
            key = f"host={host}".encode()
            for j in range(per_window):
                v = 10.0 + (i % 17) + 3.0 * math.sin(w / (4.0 + i % 7)) + 0.1 * ((w * 7 + j * 3 + i) % 5)
                ts = START_MS + w * WINDOW_MS + 10 + j * step
                out.append((key, b'{"ts":%d,"host":"%s","value":%.4f}' % (ts, host.encode(), v)))
    return out


def _forest(n_trees: int | None, sample_size: int | None) -> dict[str, int]:
    """The forest settings given on the command line; the rest are the detector's defaults."""
    return {k: v for k, v in (("n_trees", n_trees), ("sample_size", sample_size)) if v is not None}


def _write_config(path: Path, topic: str, group: str, n_trees: int | None, sample_size: int | None) -> Path:
    """Two detectors of one model: the measured one, and one on ``<topic>-warm`` for the warm-up."""
    import yaml

    def detector(name: str, topic: str) -> dict[str, Any]:
        return {
            "name": name,
            "topic": topic,
            "timestamp_field": "ts",
            "dimensions": ["host"],
            "measures": [{"field": "value", "aggregation": "sum"}],
            "window_ms": WINDOW_MS,
            "idle_timeout_ms": 0,
            "model": {"forest": _forest(n_trees, sample_size)},
        }

    cfg = {
        "group_id": group,
        "results_topic": f"{topic}.results",
        "kafka": dict(FAST_GROUP),
        "detectors": [detector("scaleout", topic), detector("warmup", f"{topic}-warm")],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _status(path: Path, pid: int) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("pid") == pid else None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def _tails(run_dir: Path, n: int = 1500) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in sorted(run_dir.glob("w*.log"))
    )


def _start_workers(
    n_workers: int, cfg: Path, bootstrap: str, run_dir: Path, threads_per_worker: int
) -> list[tuple[subprocess.Popen[bytes], Path, Any]]:
    procs: list[tuple[subprocess.Popen[bytes], Path, Any]] = []
    for i in range(n_workers):
        status = run_dir / f"w{i}.status.json"
        log = open(run_dir / f"w{i}.log", "wb")
        cmd = [
            sys.executable, "-m", "cutstream", "worker", "--config", str(cfg), "--brokers", bootstrap,
            "--data-dir", str(run_dir / "data"), "--status-file", str(status),
        ]  # fmt: skip
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads_per_worker)}
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), status, log))
    return procs


def _stop_workers(procs: list[tuple[subprocess.Popen[bytes], Path, Any]]) -> None:
    for p, _, _ in procs:
        if p.poll() is None:
            p.terminate()
    for p, _, log in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        log.close()


def _await_statuses(
    procs: list[tuple[subprocess.Popen[bytes], Path, Any]],
    done: Any,
    timeout_s: float,
    failure: str,
    run_dir: Path,
    poll_s: float = 0.1,
) -> list[dict[str, Any]]:
    """Poll the workers' status files until ``done(statuses)``; a dead worker or the timeout fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        sts = [_status(st, p.pid) for p, st, _ in procs]
        if all(sts) and done(sts):
            return [s for s in sts if s]
        if time.monotonic() > deadline or any(p.poll() is not None for p, _, _ in procs):
            raise click.ClickException(f"{failure}\n{_tails(run_dir)}")
        time.sleep(poll_s)  # polling child processes' status files


def _split(sts: list[dict[str, Any]]) -> bool:
    """The group is stable: every partition of both topics assigned once."""
    parts = [a for s in sts for a in s.get("assigned", [])]
    return all(s.get("assigned") for s in sts) and len(parts) == 2 * PARTITIONS == len(set(parts))


def run_once(
    bootstrap: str,
    stream: list[tuple[bytes, bytes]],
    expected_windows: int,
    n_workers: int,
    workdir: Path,
    n_trees: int | None,
    sample_size: int | None,
    threads_per_worker: int = 1,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """One measured run with ``n_workers`` worker processes; returns its figures."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from sinks.kafka import produce_many

    tag = uuid.uuid4().hex[:8]
    topic = f"scaleout-{n_workers}-{tag}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name in (topic, f"{topic}-warm"):
        admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name].result(
            20
        )
    run_dir = workdir / f"{n_workers}w-{tag}"
    run_dir.mkdir(parents=True)
    cfg = _write_config(run_dir / "config.yaml", topic, f"scaleout-{tag}", n_trees, sample_size)
    procs = _start_workers(n_workers, cfg, bootstrap, run_dir, threads_per_worker)
    try:
        _await_statuses(procs, _split, 120, f"the {n_workers} workers did not split the partitions", run_dir)
        producer = Producer(
            {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20,
             "queue.buffering.max.messages": 1_000_000}
        )  # fmt: skip
        # warm-up, off the clock: every worker scores a few windows of the warm-up detector, so that
        # process start-up (numba loading its cached kernels, first allocations) is not measured
        warm = build_stream(96, 6, 1)
        produce_many(producer, f"{topic}-warm", [v for _, v in warm], [k for k, _ in warm])
        producer.flush(30)
        sts = _await_statuses(
            procs,
            lambda sts: all(s["windows_closed"] > 0 for s in sts),
            300,
            f"the {n_workers} workers did not warm up",
            run_dir,
        )
        per_worker0 = [s["events_in"] for s in sts]
        events0, windows0 = sum(per_worker0), sum(s["windows_closed"] for s in sts)
        cpu0 = [_cpu_seconds(p.pid) or 0.0 for p, _, _ in procs]
        keys, values = [k for k, _ in stream], [v for _, v in stream]
        t0 = time.perf_counter()
        produce_many(producer, topic, values, keys)
        producer.flush(60)
        produced_s = time.perf_counter() - t0
        sts = _await_statuses(
            procs,
            lambda sts: (
                sum(s["events_in"] for s in sts) - events0 >= len(stream)
                and sum(s["windows_closed"] for s in sts) - windows0 >= expected_windows
            ),
            timeout_s,
            f"the {n_workers}-worker run did not finish",
            run_dir,
            poll_s=0.05,
        )
        elapsed = time.perf_counter() - t0
        per_worker = [s["events_in"] - e0 for s, e0 in zip(sts, per_worker0, strict=True)]
        cpu = [round((_cpu_seconds(p.pid) or 0.0) - c0, 2) for (p, _, _), c0 in zip(procs, cpu0, strict=True)]
    finally:
        _stop_workers(procs)
        admin.delete_topics([topic, f"{topic}-warm"])
    return {
        "workers": n_workers,
        "events": len(stream),
        "windows": expected_windows,
        "seconds": round(elapsed, 2),
        "produce_seconds": round(produced_s, 2),
        "events_per_s": round(len(stream) / elapsed),
        "windows_per_s": round(expected_windows / elapsed),
        "events_per_worker": per_worker,
        "worker_cpu_seconds": cpu,
    }


def measure(
    n_series: int,
    n_windows: int,
    per_window: int,
    workers: list[int],
    repeat: int,
    n_trees: int | None,
    sample_size: int | None,
    threads_per_worker: int = 1,
) -> dict[str, Any]:
    """Run each worker count ``repeat`` times (interleaved) on one embedded broker; medians per count.

    A short warm-up run first fills numba's on-disk kernel cache, so that no measured run pays
    for compilation.
    """
    from streams.broker import EmbeddedBroker

    stream = build_stream(n_series, n_windows, per_window)
    expected_windows = n_series * (n_windows - 1)  # no idle timeout: the last window stays open
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in workers}
    load_before = round(os.getloadavg()[0], 2)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="cutstream-scaleout-") as tmp:
        warm = build_stream(20, 10, per_window)
        run_once(broker.bootstrap, warm, 20 * 9, 1, Path(tmp), n_trees, sample_size, threads_per_worker)
        for _ in range(repeat):
            for n in workers:
                r = run_once(
                    broker.bootstrap, stream, expected_windows, n, Path(tmp), n_trees, sample_size,
                    threads_per_worker,
                )  # fmt: skip
                print(json.dumps(r), file=sys.stderr, flush=True)
                runs[n].append(r)
    medians = {n: statistics.median(r["events_per_s"] for r in rs) for n, rs in runs.items()}
    base = medians[workers[0]]
    return {
        "bench": "scaleout",
        "series": n_series,
        "windows_per_series": n_windows,
        "events_per_window": per_window,
        "events": len(stream),
        "model": _model_text(n_trees, sample_size),
        "partitions": PARTITIONS,
        "threads_per_worker": threads_per_worker,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "repeat": repeat,
        "events_per_s": {str(n): medians[n] for n in workers},
        "speedup": {str(n): round(medians[n] / base, 2) for n in workers},
        "runs": {str(n): rs for n, rs in runs.items()},
    }


@click.command("scaleout")
@click.option("--series", type=int, default=2_000, show_default=True)
@click.option("--windows", type=int, default=40, show_default=True, help="windows per series")
@click.option("--per-window", type=int, default=2, show_default=True, help="events per series per window")
@click.option("--workers", default="1,2", show_default=True, help="worker counts to compare, comma-separated")
@click.option("--repeat", type=int, default=3, show_default=True, help="runs per worker count (median)")
@click.option("--n-trees", type=int, default=None, help="trees per series (default: the detector's default)")
@click.option(
    "--sample-size", type=int, default=None, help="points per tree (default: the detector's default)"
)
@click.option(
    "--threads-per-worker", type=int, default=1, show_default=True,
    help="NUMBA_NUM_THREADS of each worker (1 = one core per worker, the deployment guidance)",
)  # fmt: skip
def scaleout(
    series: int,
    windows: int,
    per_window: int,
    workers: str,
    repeat: int,
    n_trees: int | None,
    sample_size: int | None,
    threads_per_worker: int,
) -> None:
    """Throughput of 1 vs N worker processes in one group (embedded broker, 12 partitions)."""
    counts = [int(x) for x in workers.split(",") if x.strip()]
    r = measure(series, windows, per_window, counts, repeat, n_trees, sample_size, threads_per_worker)
    click.echo(json.dumps(r))


COMMANDS = [scaleout]

#: The sizes `make bench` uses, and a quick smoke run.
FULL = {"n_series": 8_000, "n_windows": 80, "per_window": 2, "repeat": 3}
QUICK = {"n_series": 300, "n_windows": 20, "per_window": 2, "repeat": 1}


def _model_text(n_trees: int | None, sample_size: int | None) -> str:
    from detector.config import ForestConfig

    f = ForestConfig(**_forest(n_trees, sample_size))
    default = "the default model" if not _forest(n_trees, sample_size) else "the model"
    return f"{default}: {f.n_trees} trees × {f.sample_size} samples, shingle {f.shingle_size}"


def render(r: dict[str, Any]) -> str:
    """Markdown for one :func:`measure` result: the command, a table per worker count, the ratio."""
    counts = list(r["events_per_s"])
    cmd = (
        f"cutstream bench scaleout --series {r['series']} --windows {r['windows_per_series']} "
        f"--per-window {r['events_per_window']} --workers {','.join(counts)} --repeat {r['repeat']}"
    )
    lines = [
        f"Command: `{cmd}`. The embedded broker, {PARTITIONS} partitions, {r['model']}. "
        f"{r['events']:,} events: {r['series']:,} series × "
        f"{r['windows_per_series']} one-second windows × {r['events_per_window']} events. Each worker is "
        f"a `cutstream worker` process with {r['threads_per_worker']} numba thread. The clock runs from "
        "the first produced event until every event is consumed and every window is scored. The table "
        f"gives the median of {r['repeat']} interleaved runs. Worker CPU seconds are for the median run.",
        "",
        "| workers | events/s | windows scored/s | speed-up | runs (s) | worker CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for n in counts:
        runs = r["runs"][n]
        windows_per_s = statistics.median(x["windows_per_s"] for x in runs)
        mid = sorted(runs, key=lambda x: x["events_per_s"])[len(runs) // 2]
        seconds = ", ".join(str(x["seconds"]) for x in runs)
        cpu = ", ".join(map(str, mid["worker_cpu_seconds"]))
        lines.append(
            f"| {n} | {r['events_per_s'][n]:,.0f} | {windows_per_s:,.0f} | {r['speedup'][n]:.2f}× "
            f"| {seconds} | {cpu} |"
        )
    if "load_before" in r:
        lines += [
            "",
            f"The 1-minute load average before the runs was {r['load_before']}. Other processes on the "
            "machine take cores from the workers and the broker, and the ratio shows that too.",
        ]
    if "2" in r["speedup"]:
        lines += [
            "",
            f"2 workers / 1 worker = **{r['speedup']['2']:.2f}×** on {r['cpus']} cores, which also run the "
            "broker and the producer. This figure is recorded here and never asserted in a test. "
            "tests/integration/test_scale_out.py checks that the results are the same.",
        ]
    return "\n".join(lines)


def markdown_report(quick: bool) -> str:
    """The BENCHMARKS.md section on this machine: 1 vs 2 workers, the ratio, and every run."""
    size = QUICK if quick else FULL
    r = measure(size["n_series"], size["n_windows"], size["per_window"], [1, 2], size["repeat"], None, None)
    return render(r)
