"""A broker outage of 30 s mid-stream: the workers neither crash nor need a hand, and resume.

Two ``cutstream worker`` processes in one group read a 12-partition topic on an embedded broker
that this test owns. The broker is stopped while the workers are still busy with the first part of
a stream, stays down for 30 s, and is started again on the same port.

What the test can honestly assert depends on the embedded broker: it keeps everything in memory,
so the restarted broker has no topics, no committed offsets, no group and no idempotent-producer
state, all of which a real Kafka keeps across a restart. The test therefore recreates the topic,
produces a fresh stream that continues in event time, and asserts:

- the worker processes stay alive through the outage and the recovery, with no restart and no
  manual step;
- they rejoin the group by themselves (librdkafka's reconnect back-off) and split the partitions
  again;
- they process the fresh stream: results of windows that only the fresh stream has reach Parquet;
- they still shut down cleanly (exit status 0) when asked to.

The worker's config turns producer idempotence off (the ``kafka:`` passthrough) because the
restarted embedded broker does not know the producer id that a real Kafka would still know.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml

from tests.conftest import wait_for
from tests.integration.worker_procs import BASE_MS, Stream, WorkerProc, produce, read_results, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 12
OUTAGE_S = 30.0


@pytest.fixture(scope="module", autouse=True)
def _warm_kernels() -> None:
    """Compile the engine's numba kernels here first: the workers then load them from numba's on-disk
    cache instead of each compiling them (which, on a cold cache, takes longer than the waits below)."""
    import numpy as np

    from detector.config import ForestConfig, ModelConfig
    from detector.detector import Detector

    d = Detector(ModelConfig(forest=ForestConfig(n_trees=4, sample_size=8, shingle_size=2, seed=1)))
    n = 40
    d.process_many(["warm"] * n, np.arange(n, dtype=np.float64), np.arange(n, dtype=np.int64) * 1000)


def _create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(20)


def _split(workers: list[WorkerProc]) -> bool:
    """Every worker has partitions, and together they hold each of the 12 once."""
    statuses = [w.read_status() for w in workers]
    if not all(statuses):
        return False
    sets = [set(s["assigned"]) for s in statuses if s]
    return all(sets) and sum(map(len, sets)) == PARTITIONS == len(set().union(*sets))


def _paced_producer(
    bootstrap: str, topic: str, windows: list[list[tuple[bytes, bytes]]], stop: threading.Event
) -> None:
    """Produce one window of events every 150 ms (a live stream) until done or ``stop`` is set."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5})
    for events in windows:
        if stop.is_set():
            break
        for key, value in events:
            p.produce(topic, key=key, value=value)
        p.poll(0)
        stop.wait(0.15)  # the stream's pace, not a synchronization
    p.flush(1)  # what the stopped broker did not take is lost with it, as in any outage


def _tails(workers: list[WorkerProc]) -> str:
    return "\n".join(w.log_tail(2500) for w in workers)


def _results_from(data_dir: Path, first_window_ms: int) -> int:
    table = read_results(data_dir)
    if table is None:
        return 0
    starts = table.column("windowStart").cast(pa.int64()).to_pylist()
    return sum(1 for s in starts if s >= first_window_ms)


def test_workers_survive_a_30s_broker_outage_and_resume(tmp_path: Path, group_factory: Any) -> None:
    from streams.broker import EmbeddedBroker, free_port

    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    bootstrap = broker.bootstrap
    topic = "outage-events"
    _create_topic(bootstrap, topic)
    cfg = write_config(tmp_path / "cfg.yaml", topic, group_factory(), f"{topic}.results")
    raw = yaml.safe_load(cfg.read_text())
    raw["kafka"]["enable.idempotence"] = "false"  # see the module docstring
    cfg.write_text(yaml.safe_dump(raw))

    stream = Stream(n_series=24, n_windows=300, per_window=2)
    # the first part is live (one window per 150 ms, up to 100 windows) and is cut by the outage;
    # the fresh part (windows 100..299) has at least twice as many events per partition: a worker
    # may resume a partition at the offset of its checkpoint (taken before the outage), which the
    # recreated topic reuses
    first = [stream.events(w, w + 1) for w in range(100)]
    fresh = stream.events(100, 300)
    data = tmp_path / "data"
    fast = ["--poll-timeout", "0.05", "--parquet-interval", "0.2", "--checkpoint-interval", "1"]
    ports = [free_port() for _ in range(2)]  # each worker's /metrics, /healthz, /readyz
    workers = [
        WorkerProc(cfg, bootstrap, data, tmp_path / f"w{i}.log", *fast, "--metrics-port", str(port))
        for i, port in enumerate(ports)
    ]

    def probe(path: str) -> list[int | None]:
        codes: list[int | None] = []
        for port in ports:
            try:
                codes.append(httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code)
            except httpx.TransportError:
                codes.append(None)
        return codes

    def wait(condition: Any, timeout_s: float, what: str) -> Any:
        try:
            return wait_for(condition, timeout_s=timeout_s, message=what)
        except AssertionError as exc:  # the workers' logs as they are now, not when the wait began
            raise AssertionError(f"{exc}\n" + "\n".join(w.log_tail(2500) for w in workers)) from None

    try:
        wait(lambda: _split(workers), 60, "the group to form")
        stop_stream = threading.Event()
        live = threading.Thread(
            target=_paced_producer, args=(bootstrap, topic, first, stop_stream), daemon=True
        )
        live.start()
        # mid-stream: events are flowing and the workers have written their first results ...
        wait(lambda: _results_from(data, BASE_MS) > 0, 120, "first results")
        assert live.is_alive(), "the first part was over before the outage: not mid-stream"
        broker.stop()  # ... when the broker goes away
        stop_stream.set()
        live.join(10)
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:  # the outage itself (not a synchronization)
            assert all(w.alive() for w in workers), "a worker exited during the outage\n" + _tails(workers)
            time.sleep(0.5)

        broker = EmbeddedBroker(port=port).start()  # same address; it lost everything
        _create_topic(bootstrap, topic)
        wait(lambda: _split(workers) or not all(w.alive() for w in workers), 60, "the group to form again")
        assert all(w.alive() for w in workers), "a worker exited after the broker came back\n" + _tails(
            workers
        )
        produce(bootstrap, topic, fresh)
        # windows 280..298 of every series: only the fresh stream has them, and they are read whether
        # a worker resumes a partition at offset 0 or at its checkpoint's (window 299 stays open)
        fresh_start_ms = BASE_MS + 280 * stream.window_ms
        expected_fresh = stream.n_series * (300 - 280 - 1)
        wait(
            lambda: (
                _results_from(data, fresh_start_ms) >= expected_fresh or not all(w.alive() for w in workers)
            ),
            120,
            "results of the fresh stream",
        )
        assert all(w.alive() for w in workers), "a worker exited after the broker came back\n" + _tails(
            workers
        )
        assert _results_from(data, fresh_start_ms) >= expected_fresh
        # and the operators' view agrees: alive, and ready again
        assert probe("/healthz") == [200, 200]
        wait(lambda: probe("/readyz") == [200, 200], 30, "the workers to report ready again")
        for w in workers:
            assert w.terminate() == 0, w.log_tail()
    finally:
        for w in workers:
            w.kill()
        broker.stop()
