"""WorkerMetrics: metric values, per-worker registries and the health rules (no server)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import WorkerMetrics


class FakeClock:
    """A clock the test moves by hand (the health rules depend on elapsed time only)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(m: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_counters_and_gauges_report_what_the_worker_said() -> None:
    m = WorkerMetrics(CollectorRegistry())
    m.events_in(10)
    m.events_in(5)
    m.dead_lettered("bad_json", 2)
    m.dead_lettered("missing_field")
    m.scored(7)
    m.series_tracked(42)
    m.model_bytes(123_456)
    m.lag(3, 17, topic="events")
    m.window_closed(0.02, n=4)
    m.broker_error("transport")
    m.results_transactions(12, 3)
    s = samples(m)
    assert s[("cutstream_events_total", ())] == 15
    assert s[("cutstream_dead_lettered_total", (("reason", "bad_json"),))] == 2
    assert s[("cutstream_dead_lettered_total", (("reason", "missing_field"),))] == 1
    assert s[("cutstream_scores_total", ())] == 7
    assert s[("cutstream_series_tracked", ())] == 42
    assert s[("cutstream_model_bytes", ())] == 123_456
    assert s[("cutstream_consumer_lag", (("partition", "3"), ("topic", "events")))] == 17
    assert s[("cutstream_windows_closed_total", ())] == 4
    assert s[("cutstream_window_close_latency_seconds_count", ())] == 1
    assert s[("cutstream_window_close_latency_seconds_bucket", (("le", "0.025"),))] == 1
    assert s[("cutstream_window_close_latency_seconds_bucket", (("le", "0.01"),))] == 0
    assert s[("cutstream_broker_errors_total", (("kind", "transport"),))] == 1
    assert s[("cutstream_results_transactions", ())] == 12
    assert s[("cutstream_results_recovered", ())] == 3
    assert all(name.startswith("cutstream_") for name, _ in s)


def test_revoked_partitions_drop_their_lag() -> None:
    m = WorkerMetrics(CollectorRegistry())
    m.lag(0, 5, topic="events")
    m.lag(1, 6, topic="events")
    m.forget_partitions([("events", 0), ("events", 9)])  # 9 was never reported
    lags = {k: v for k, v in samples(m).items() if k[0] == "cutstream_consumer_lag"}
    assert lags == {("cutstream_consumer_lag", (("partition", "1"), ("topic", "events"))): 6}


def test_alerts_take_a_cumulative_total_and_count_only_the_increase() -> None:
    m = WorkerMetrics(CollectorRegistry())
    m.alerts(sent_total=3, pending=2)
    m.alerts(sent_total=3, pending=1)
    m.alerts(sent_total=5, pending=0)
    s = samples(m)
    assert s[("cutstream_alerts_sent_total", ())] == 5
    assert s[("cutstream_alerts_pending", ())] == 0
    m.alerts(sent_total=1, pending=4)  # the alert service restarted: counting resumes from its total
    s = samples(m)
    assert s[("cutstream_alerts_sent_total", ())] == 5
    assert s[("cutstream_alerts_pending", ())] == 4


def test_each_worker_has_its_own_registry_and_never_the_global_one() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.events_in(3)
    assert samples(a)[("cutstream_events_total", ())] == 3
    assert samples(b)[("cutstream_events_total", ())] == 0
    assert REGISTRY.get_sample_value("cutstream_events_total") is None


def test_liveness_fails_when_the_loop_stops_ticking() -> None:
    clock = FakeClock()
    m = WorkerMetrics(CollectorRegistry(), liveness_timeout_s=10, clock=clock)
    assert m.liveness()[0]  # starting counts as a tick
    clock.now += 11
    alive, details = m.liveness()
    assert not alive and details["last_tick_age_s"] == 11
    assert samples(m)[("cutstream_loop_tick_age_seconds", ())] == 11
    m.tick()
    assert m.liveness()[0]


def test_readiness_needs_set_ready_and_a_live_loop() -> None:
    clock = FakeClock()
    m = WorkerMetrics(CollectorRegistry(), liveness_timeout_s=10, clock=clock)
    ready, details = m.readiness()
    assert not ready and details["reason"] == "starting"
    m.set_ready(True)
    assert m.readiness()[0]
    assert samples(m)[("cutstream_ready", ())] == 1
    clock.now += 30
    ready, details = m.readiness()
    assert not ready and details["reason"] == "worker loop stalled"
    m.tick()
    m.set_ready(False, "broker unreachable")
    ready, details = m.readiness()
    assert not ready and details["reason"] == "broker unreachable"
    assert samples(m)[("cutstream_ready", ())] == 0
