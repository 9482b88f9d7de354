"""The incident lifecycle of one series: anomalous windows open, update and resolve an incident.

Pure logic (no I/O, no clock): decisions depend only on the records and the stored state, in event
time, so a replay after a crash takes the same decisions and yields the same de-duplication keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

from sinks.config import AlertsConfig
from sinks.record import STAGE_INFERENCE, format_period

EventKind = Literal["open", "update", "resolve"]


@dataclasses.dataclass
class SeriesState:
    """What the alerting side remembers about one series (stored as JSON in the outbox database)."""

    last_window_ms: int = -1
    last_notified_ms: int | None = None
    incident_id: str | None = None
    opened_ms: int = 0
    last_anomaly_ms: int = 0
    anomalies: int = 0
    peak_score: float = 0.0
    normal_run: int = 0
    announced: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeriesState:
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class IncidentEvent:
    """A lifecycle event: its kind, de-duplication key and the facts it carries.

    ``notify`` is False for the events of an incident held silent by the cool-down: they are
    recorded (the incident list shows them) but sent nowhere.
    """

    kind: EventKind
    incident_id: str
    dedup_key: str
    facts: dict[str, Any]
    notify: bool = True


def is_anomalous(record: Mapping[str, Any], config: AlertsConfig) -> bool:
    return (
        int(record["anomalyDecision"]) == 1
        and record["modelStage"] == STAGE_INFERENCE
        and float(record["anomalyConfidenceScore"]) >= config.min_confidence
    )


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if f != f else f  # NaN → None (JSON has no NaN)


#: How much history before the incident the dashboard link shows.
_LINK_CONTEXT_MS = 3_600_000


def facts(
    record: Mapping[str, Any], state: SeriesState, config: AlertsConfig, kind: EventKind
) -> dict[str, Any]:
    """Everything a receiver needs to act, from one record and its incident (no secrets)."""
    from urllib.parse import urlencode

    detector = str(record["detectorName"])
    sid = str(record["timeseriesId"])
    dims = {d["name"]: d["value"] for d in record["dimensionList"]}
    link_query = urlencode(
        {
            "detector": detector,
            "series": sid,
            "from": format_period(max(0, state.opened_ms - _LINK_CONTEXT_MS)),
            "to": str(record["detectionPeriodEndTime"]),
        }
    )
    return {
        "event": kind,
        "detector": detector,
        "measure": str(record["measure"]),
        "timeseriesId": sid,
        "dimensions": dims,
        "window": {
            "start": str(record["detectionPeriodStartTime"]),
            "end": str(record["detectionPeriodEndTime"]),
        },
        "actual": _num(record["aggregatedMeasureValue"]),
        "expected": _num(record["expectedValue"]),
        "score": _num(record["anomalyScore"]),
        "confidence": _num(record["anomalyConfidenceScore"]),
        "threshold": _num(record["anomalyDecisionThreshold"]),
        "incident": {
            "id": state.incident_id,
            "status": "resolved" if kind == "resolve" else "open",
            "openedAt": format_period(state.opened_ms),
            "lastAnomalyAt": format_period(state.last_anomaly_ms),
            "anomalousWindows": state.anomalies,
            "peakScore": state.peak_score,
        },
        "dashboardUrl": f"{config.dashboard_url.rstrip('/')}/?{link_query}",
    }


def _on_anomaly(
    state: SeriesState,
    record: Mapping[str, Any],
    config: AlertsConfig,
    ws: int,
    cooled: bool,
    emit: Callable[..., None],
) -> None:
    """An anomalous window: open the series' incident or add to it; announce when cooled down."""
    score = float(record["anomalyScore"])
    if state.incident_id is None:
        state.incident_id = f"{record['timeseriesId'][:16]}-{ws}"
        state.opened_ms = ws
        state.anomalies = 0
        state.peak_score = score
        state.announced = False
    state.anomalies += 1
    state.peak_score = max(state.peak_score, score)
    state.last_anomaly_ms = ws
    state.normal_run = 0
    if not state.announced:
        if cooled:
            state.announced = True
            emit("open", f"{state.incident_id}:open")
        elif state.anomalies == 1:  # flapping inside the cool-down: silent until it outlasts it
            emit("open", f"{state.incident_id}:open", notify=False)
    elif config.notify_updates and cooled:
        emit("update", f"{state.incident_id}:update:{ws}")


def step(state: SeriesState, record: Mapping[str, Any], config: AlertsConfig) -> list[IncidentEvent]:
    """Advance ``state`` by one record of its series; return the notifications it causes.

    Records at or before ``state.last_window_ms`` were seen already (a replay) and change nothing.
    """
    ws = int(record["windowStart"])
    if ws <= state.last_window_ms:
        return []
    state.last_window_ms = ws
    cooldown_ms = int(config.cooldown_s * 1000)
    cooled = state.last_notified_ms is None or ws - state.last_notified_ms >= cooldown_ms
    events: list[IncidentEvent] = []

    def emit(kind: EventKind, key: str, notify: bool = True) -> None:
        events.append(
            IncidentEvent(kind, str(state.incident_id), key, facts(record, state, config, kind), notify)
        )
        if notify:
            state.last_notified_ms = ws

    if is_anomalous(record, config):
        _on_anomaly(state, record, config, ws, cooled, emit)
    elif state.incident_id is not None:
        state.normal_run += 1
        if state.normal_run >= config.resolve_after_windows:
            emit("resolve", f"{state.incident_id}:resolve", notify=state.announced)
            state.incident_id = None
            state.normal_run = 0
            state.announced = False
    return events
