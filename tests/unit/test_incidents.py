"""Incidents: a burst is one incident with updates; cool-down; rate limit; replay adds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from sinks.alerts import AlertService
from sinks.alerts.testing import WebhookReceiver
from sinks.config import AlertsConfig, DeliveryConfig, WebhookConfig
from sinks.record import STAGE_LEARNING
from sinks.testing import result_table

URL = "http://127.0.0.1:9/unused"  # nothing is delivered in the tests that use it


def _kinds(svc: AlertService) -> list[str]:
    return [r.kind for r in svc.pending()]


def _cfg(**kw: object) -> AlertsConfig:
    return AlertsConfig(webhooks=(WebhookConfig(url=kw.pop("url", URL)),), **kw)  # type: ignore[arg-type]


def _burst(n_anomalous: int = 100, n_normal: int = 5, **kw: object) -> pa.Table:
    scores = [0.0] * 3 + [95.0] * n_anomalous + [10.0] * n_normal
    return result_table(values=[float(i) for i in range(len(scores))], scores=scores, **kw)  # type: ignore[arg-type]


def test_burst_of_100_anomalous_windows_is_one_incident_with_updates(tmp_path: Path) -> None:
    svc = AlertService({"shop": _cfg(cooldown_s=900, resolve_after_windows=3)}, tmp_path)
    added = svc.observe(_burst())
    rows = svc.pending()
    # 60 s windows, 15 min cool-down: open at minute 0, updates at 15..90, one resolve.
    assert _kinds(svc) == ["open"] + ["update"] * 6 + ["resolve"]
    assert added == len(rows) == 8
    assert len({r.payload["incident"]["id"] for r in rows}) == 1
    assert len({r.dedup_key for r in rows}) == 8
    resolve = rows[-1].payload
    assert resolve["incident"]["status"] == "resolved"
    assert resolve["incident"]["anomalousWindows"] == 100
    assert resolve["incident"]["peakScore"] == 95.0
    (incident,) = svc.incidents()
    assert incident["status"] == "resolved"


def test_batching_does_not_change_decisions_and_replay_adds_nothing(tmp_path: Path) -> None:
    table = _burst()
    one = AlertService({"shop": _cfg()}, tmp_path / "one")
    one.observe(table)
    many = AlertService({"shop": _cfg()}, tmp_path / "many")
    for start in range(0, table.num_rows, 7):
        many.observe(table.slice(start, 7))
    assert [r.dedup_key for r in many.pending()] == [r.dedup_key for r in one.pending()]
    # A crash-replay re-observes records already seen: nothing is added.
    assert many.observe(table) == 0
    assert many.observe(table.slice(50, 30)) == 0
    # A fresh service over the same state dir continues the same incidents.
    again = AlertService({"shop": _cfg()}, tmp_path / "many")
    assert again.observe(table) == 0
    assert len(again.pending()) == 8


def test_incident_spanning_batches_continues_after_restart(tmp_path: Path) -> None:
    table = _burst(n_anomalous=10, n_normal=4)
    first = AlertService({"shop": _cfg(cooldown_s=0)}, tmp_path)
    first.observe(table.slice(0, 8))
    first.outbox.close()
    second = AlertService({"shop": _cfg(cooldown_s=0)}, tmp_path)
    second.observe(table.slice(8))
    rows = second.pending()
    assert [r.kind for r in rows] == ["open"] + ["update"] * 9 + ["resolve"]
    assert len({r.payload["incident"]["id"] for r in rows}) == 1


def test_gap_shorter_than_resolve_after_merges_longer_splits(tmp_path: Path) -> None:
    # anomaly, 2 normal, anomaly (merged: gap < 3), 3 normal (resolves), 20 min later an anomaly.
    scores = [95, 10, 10, 95, 10, 10, 10] + [10] * 20 + [95, 10, 10, 10]
    svc = AlertService({"shop": _cfg(cooldown_s=600, resolve_after_windows=3)}, tmp_path)
    svc.observe(result_table(values=[1.0] * len(scores), scores=scores))
    rows = svc.pending()
    assert [r.kind for r in rows] == ["open", "resolve", "open", "resolve"]
    assert rows[1].payload["incident"]["anomalousWindows"] == 2
    assert len({r.payload["incident"]["id"] for r in rows}) == 2


def test_cooldown_holds_a_flapping_series_silent(tmp_path: Path) -> None:
    # Incident 1 resolves at minute 3; incident 2 opens at minute 6 (inside the 10 min cool-down)
    # and resolves silently; incident 3 opens inside the cool-down and outlasts it: announced then.
    scores = [95, 10, 10, 10, 10, 10, 95, 10, 10, 10, 95] + [95] * 10 + [10, 10, 10]
    svc = AlertService({"shop": _cfg(cooldown_s=600, resolve_after_windows=3)}, tmp_path)
    svc.observe(result_table(values=[1.0] * len(scores), scores=scores))
    rows = svc.pending()
    assert [r.kind for r in rows] == ["open", "resolve", "open", "resolve"]
    ids = [r.payload["incident"]["id"] for r in rows]
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    # The third incident opened at minute 10, announced at minute 13 (10 min after the resolve).
    assert rows[2].payload["incident"]["openedAt"].endswith("00:10:00")
    assert rows[2].payload["window"]["start"].endswith("00:13:00")
    assert [i["announced"] for i in svc.incidents()] == [True, False, True]


def test_learning_stage_and_low_confidence_raise_nothing(tmp_path: Path) -> None:
    svc = AlertService({"shop": _cfg(min_confidence=50)}, tmp_path)
    assert svc.observe(_burst(stage=STAGE_LEARNING)) == 0
    assert svc.observe(_burst(confidence=20.0, detector="shop", start_ms=1_800_000_000_000)) == 0
    assert svc.pending() == []
    # Detectors without hooks are ignored altogether.
    quiet = AlertService({"shop": AlertsConfig()}, tmp_path / "quiet")
    assert quiet.observe(_burst()) == 0


def test_every_hook_gets_every_notification(tmp_path: Path) -> None:
    cfg = AlertsConfig(webhooks=(WebhookConfig(url=URL), WebhookConfig(url=URL + "2")))
    svc = AlertService({"shop": cfg}, tmp_path)
    assert svc.observe(_burst(n_anomalous=1)) == 4
    assert len({r.hook for r in svc.pending()}) == 2


def test_global_rate_limit_delays_but_never_drops(tmp_path: Path) -> None:
    with WebhookReceiver() as rx:
        cfg = _cfg(url=rx.url)
        svc = AlertService({"shop": cfg}, tmp_path, DeliveryConfig(max_per_minute=3))
        tables = [
            _burst(n_anomalous=1, n_normal=0, dimensions={"product_name": f"item-{i}"}) for i in range(5)
        ]
        t0 = 1_000_000.0
        assert svc.observe(pa.concat_tables(tables), now=t0) == 5
        assert svc.deliver_pending(now=t0) == 3
        assert len(svc.pending()) == 2
        assert svc.deliver_pending(now=t0 + 30) == 0  # still inside the rolling minute
        # The delivery thread sleeps until the rolling minute frees a slot (capped by idle_wait_s).
        assert svc.next_due(t0 + 30) == svc.delivery.idle_wait_s
        assert svc.next_due(t0 + 58) == pytest.approx(2.0)
        assert svc.deliver_pending(now=t0 + 61) == 2
        assert svc.pending() == []
        assert sorted(rx.accepted.values()) == [1] * 5
        delivered = json.dumps(sorted(k for k, _ in svc.outbox.delivered_keys()))
        assert delivered == json.dumps(sorted(rx.accepted))


def test_one_deliverer_per_outbox(tmp_path: Path) -> None:
    with WebhookReceiver() as rx:
        cfg = _cfg(url=rx.url)
        first = AlertService({"shop": cfg}, tmp_path)
        second = AlertService({"shop": cfg}, tmp_path)  # e.g. a second worker on the same data dir
        first.observe(_burst(n_anomalous=1, n_normal=3))
        second.observe(_burst(n_anomalous=1, n_normal=3, dimensions={"product_name": "item-B"}))
        assert len(first.pending()) == 4
        assert first.deliver_pending() == 4
        second.observe(_burst(n_anomalous=1, n_normal=0, dimensions={"product_name": "item-C"}))
        assert second.deliver_pending() == 0  # first holds the delivery lock
        first.stop()
        assert second.deliver_pending() == 1  # taken over once the holder stopped
        second.stop()
        assert sorted(rx.accepted.values()) == [1] * 5
