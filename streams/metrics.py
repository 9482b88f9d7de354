"""How the pipeline itself is doing: Prometheus metrics and health endpoints of one worker.

Each worker owns one :class:`WorkerMetrics` over its own ``CollectorRegistry`` (never the
process-global one, so that tests and several workers in one process do not share counters).
:meth:`WorkerMetrics.serve` starts a small threaded HTTP server with three paths:

- ``/metrics``: the Prometheus text format (every name starts with ``cutstream_``);
- ``/healthz``: liveness, 200 while the worker loop called :meth:`WorkerMetrics.tick` within
  ``liveness_timeout_s``, 503 once it has not (a stuck loop: let the orchestrator restart it);
- ``/readyz``: readiness, 200 while the worker says it is ready (:meth:`WorkerMetrics.set_ready`:
  consumer assigned, broker reachable) and alive, 503 otherwise (e.g. while it reconnects).

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> m = WorkerMetrics(CollectorRegistry())
    >>> m.events_in(3); m.dead_lettered("bad_json", 1); m.tick()
    >>> server = m.serve(0)  # doctest: +SKIP  (port 0 = any free port; server.port tells which)
    >>> server.close()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from pydantic import BaseModel, ConfigDict, Field

from streams.errors import StreamsError

logger = logging.getLogger(__name__)

#: Seconds from a window's close to its results being emitted: sub-millisecond batches up to a minute.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_StartResponse = Callable[..., Any]
_Environ = dict[str, Any]


class MetricsConfig(BaseModel):
    """Where a worker serves its metrics and health endpoints (built by the command line)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int | None = Field(
        None, ge=0, le=65535, description="HTTP port; None = no server (0 = any free port)"
    )
    host: str = Field("127.0.0.1", description="listen address; 0.0.0.0 in a container")
    liveness_timeout_s: float = Field(
        120.0,
        gt=0,
        description="/healthz fails once the worker loop has not ticked for this long; long enough for the "
        "first scoring step, which compiles the engine's kernels on a cold numba cache",
    )


class WorkerMetrics:
    """The metrics of one worker, and its liveness and readiness.

    Every method is cheap and thread-safe (prometheus-client's own locks, plus one lock for the
    health state), so the worker loop may call them per batch.

    Args:
        registry: where the metrics are registered; a fresh ``CollectorRegistry`` when None.
        liveness_timeout_s: how long the loop may go without :meth:`tick` and still count as alive.
        clock: monotonic seconds (injectable for tests of the health rules).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        liveness_timeout_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.liveness_timeout_s = liveness_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_tick = clock()  # starting counts as a tick: a grace period before the first batch
        self._ready = False
        self._ready_reason = "starting"
        self._alerts_sent_seen = 0
        self._alerts_dead_seen = 0
        self._declare_pipeline(self.registry)
        self._declare_alerts_and_health(self.registry)

    def _declare_pipeline(self, r: CollectorRegistry) -> None:
        self._events = Counter("cutstream_events", "Events read from the events topics", registry=r)
        self._dead = Counter(
            "cutstream_dead_lettered",
            "Events sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self._lag = Gauge(
            "cutstream_consumer_lag",
            "Messages between the consumer position and the partition's end offset "
            "(ListOffsets; the fetch-cached high watermark on Tansu)",
            ["topic", "partition"],
            registry=r,
        )
        self._series = Gauge("cutstream_series_tracked", "Series whose model this worker holds", registry=r)
        self._model_bytes = Gauge(
            "cutstream_model_bytes", "Bytes held by the models of the tracked series", registry=r
        )
        self._parked = Gauge(
            "cutstream_models_parked", "Models parked on disk by the model budget (max_models)", registry=r
        )
        self._model_moves = Gauge(
            "cutstream_models_moved",
            "Models moved by the model budget since the worker started: parked (to disk), reloaded "
            "(back from disk), dropped (one-point models, not worth a write)",
            ["move"],
            registry=r,
        )
        self._txn_commits = Gauge(
            "cutstream_results_transactions",
            "Results-topic transactions committed since the worker started (exactly-once only: one per "
            "partition checkpoint)",
            registry=r,
        )
        self._txn_recovered = Gauge(
            "cutstream_results_recovered",
            "Results produced again after a restore because their transaction never committed "
            "(exactly-once only)",
            registry=r,
        )
        self._latency = Histogram(
            "cutstream_window_close_latency_seconds",
            "Wall-clock seconds from a batch of windows closing to its results being emitted",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._windows = Counter("cutstream_windows_closed", "Windows closed (one result each)", registry=r)
        self._scores = Counter("cutstream_scores", "Scored results emitted", registry=r)

    def _declare_alerts_and_health(self, r: CollectorRegistry) -> None:
        self._alerts_sent = Counter("cutstream_alerts_sent", "Alert notifications delivered", registry=r)
        self._alerts_pending = Gauge(
            "cutstream_alerts_pending", "Alert notifications waiting in the outbox", registry=r
        )
        self._alerts_dead_lettered = Counter(
            "cutstream_alerts_dead_lettered",
            "Alert notifications moved to the outbox's dead letters (no longer retried)",
            registry=r,
        )
        self._alerts_dead = Gauge(
            "cutstream_alerts_dead_letters",
            "Alert notifications in the outbox's dead letters, waiting for `cutstream outbox --requeue-dead`",
            registry=r,
        )
        self._broker_errors = Counter(
            "cutstream_broker_errors",
            "Broker errors seen by the worker's clients, by kind",
            ["kind"],
            registry=r,
        )
        self._ready_gauge = Gauge(
            "cutstream_ready", "1 while the worker is ready (assigned, connected)", registry=r
        )
        self._tick_age = Gauge(
            "cutstream_loop_tick_age_seconds", "Seconds since the worker loop last ticked", registry=r
        )
        self._tick_age.set_function(self.tick_age_s)

    # -- the worker loop's calls ---------------------------------------------------------------
    def events_in(self, n: int) -> None:
        """Count ``n`` events read from the events topics (valid or not)."""
        self._events.inc(n)

    def dead_lettered(self, reason: str, n: int = 1) -> None:
        """Count ``n`` events sent to the dead-letter topic for ``reason`` (a short, fixed word)."""
        self._dead.labels(reason=reason).inc(n)

    def window_closed(self, latency_s: float, n: int = 1) -> None:
        """Record a batch of ``n`` windows closed and emitted ``latency_s`` seconds after closing."""
        self._latency.observe(max(latency_s, 0.0))
        self._windows.inc(n)

    def scored(self, n: int) -> None:
        """Count ``n`` scored results emitted."""
        self._scores.inc(n)

    def series_tracked(self, n: int) -> None:
        """Set the number of series this worker holds a model for."""
        self._series.set(n)

    def model_bytes(self, n: int) -> None:
        """Set the bytes held by the models (e.g. series × ``Forest.bytes_per_series``)."""
        self._model_bytes.set(n)

    def models(self, parked_now: int, parked: int, reloaded: int, dropped: int) -> None:
        """Set the model budget's figures: models parked now, and totals parked, reloaded, dropped."""
        self._parked.set(parked_now)
        for move, n in (("parked", parked), ("reloaded", reloaded), ("dropped", dropped)):
            self._model_moves.labels(move=move).set(n)

    def results_transactions(self, committed: int, recovered: int) -> None:
        """Set the results topic's transaction totals: transactions committed, records produced again."""
        self._txn_commits.set(committed)
        self._txn_recovered.set(recovered)

    def lag(self, partition: int, n: int, topic: str = "") -> None:
        """Set the lag of one assigned partition (end offset − position)."""
        self._lag.labels(topic=topic, partition=str(partition)).set(max(n, 0))

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the lag series of revoked ``(topic, partition)`` pairs."""
        for topic, partition in partitions:
            try:
                self._lag.remove(topic, str(partition))
            except KeyError:
                continue  # never reported: nothing to drop

    def alerts(self, sent_total: int, pending: int, dead_lettered_total: int = 0, dead: int = 0) -> None:
        """Report the alert outbox: ``sent_total`` delivered so far (cumulative), ``pending`` waiting,
        ``dead_lettered_total`` moved to the dead letters so far (cumulative), ``dead`` in them now."""
        with self._lock:
            delta = sent_total - self._alerts_sent_seen
            self._alerts_sent_seen = sent_total
            dead_delta = dead_lettered_total - self._alerts_dead_seen
            self._alerts_dead_seen = dead_lettered_total
        if delta > 0:  # a smaller total means the alert service restarted: count from there
            self._alerts_sent.inc(delta)
        if dead_delta > 0:
            self._alerts_dead_lettered.inc(dead_delta)
        self._alerts_pending.set(max(pending, 0))
        self._alerts_dead.set(max(dead, 0))

    def broker_error(self, kind: str) -> None:
        """Count one broker error (e.g. ``transport``, ``all_brokers_down``) seen by a client."""
        self._broker_errors.labels(kind=kind).inc()

    def tick(self) -> None:
        """Say the worker loop is alive; call once per loop iteration."""
        with self._lock:
            self._last_tick = self._clock()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Say whether the worker is ready (consumer assigned, broker reachable); ``reason`` when not."""
        with self._lock:
            changed = ready != self._ready
            self._ready = ready
            self._ready_reason = "" if ready else (reason or "not ready")
        self._ready_gauge.set(1 if ready else 0)
        if changed:
            logger.info("worker readiness changed ready=%s reason=%s", ready, "-" if ready else reason or "-")

    # -- health --------------------------------------------------------------------------------
    def tick_age_s(self) -> float:
        """Seconds since the last :meth:`tick`."""
        with self._lock:
            return max(self._clock() - self._last_tick, 0.0)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(alive, details): alive while the loop ticked within ``liveness_timeout_s``."""
        age = self.tick_age_s()
        return age <= self.liveness_timeout_s, {"last_tick_age_s": round(age, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): ready when :meth:`set_ready` said so and the loop is alive."""
        alive, details = self.liveness()
        with self._lock:
            ready, reason = self._ready, self._ready_reason
        if ready and not alive:
            reason = "worker loop stalled"
        return ready and alive, {**details, "reason": reason}

    # -- HTTP ------------------------------------------------------------------------------------
    def wsgi_app(self) -> Callable[[_Environ, _StartResponse], Iterable[bytes]]:
        """The WSGI app that serves /metrics, /healthz and /readyz."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: _Environ, start_response: _StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path == "/metrics":
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            if path in ("/healthz", "/readyz"):
                ok, details = self.liveness() if path == "/healthz" else self.readiness()
                body = json.dumps({"status": "ok" if ok else "fail", **details}).encode()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(
                    status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                )
                return [body]
            body = b"cutstream worker: /metrics /healthz /readyz\n"
            status = "200 OK" if path == "/" else "404 Not Found"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]

        return app

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve the endpoints on ``host:port`` (0 = a free port) in a daemon thread."""
        return MetricsServer(self.wsgi_app(), port, host)


class MetricsError(StreamsError):
    """The metrics server could not start (e.g. the port is taken: pick another ``--metrics-port``)."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics http " + format, *args)


class MetricsServer:
    """A running metrics/health HTTP server; :meth:`close` stops it."""

    def __init__(
        self, app: Callable[[_Environ, _StartResponse], Iterable[bytes]], port: int, host: str
    ) -> None:
        try:
            self._server = make_server(
                host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="cutstream-metrics",
            daemon=True,
        )
        self._thread.start()
        logger.info("metrics server listening host=%s port=%d", host, self.port)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:9108``."""
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
