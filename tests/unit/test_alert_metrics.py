"""The worker's alert metrics: dead letters as a cumulative counter and a current gauge."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import WorkerMetrics


def _samples(m: WorkerMetrics) -> dict[str, float]:
    text = generate_latest(m.registry).decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_dead_letters_are_counted_and_gauged() -> None:
    m = WorkerMetrics(CollectorRegistry())
    m.alerts(sent_total=1, pending=3, dead_lettered_total=2, dead=2)
    m.alerts(sent_total=1, pending=1, dead_lettered_total=4, dead=4)
    s = _samples(m)
    assert s["cutstream_alerts_dead_lettered_total"] == 4 and s["cutstream_alerts_dead_letters"] == 4
    # Requeued (the gauge drops), then the service restarted (its total starts over): no double count.
    m.alerts(sent_total=0, pending=4, dead_lettered_total=1, dead=1)
    s = _samples(m)
    assert s["cutstream_alerts_dead_lettered_total"] == 4 and s["cutstream_alerts_dead_letters"] == 1
    assert s["cutstream_alerts_pending"] == 4
