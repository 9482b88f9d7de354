"""AlertService: result records → incidents → durable outbox → hooks, with back-off and a rate limit."""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sinks.alerts.hooks import AlertHook, Attempt, EmailHook, WebhookHook
from sinks.alerts.incidents import IncidentEvent, SeriesState, is_anomalous, step
from sinks.alerts.outbox import REASON_EXPIRED, REASON_REJECTED, DeadLetter, Outbox, OutboxRow
from sinks.config import AlertsConfig, DeliveryConfig
from sinks.record import STAGE_INFERENCE

logger = logging.getLogger(__name__)

#: Where the outbox lives under a data directory (``cutstream outbox --data-dir D`` reads it there).
STATE_SUBDIR = "alerts"

_COLUMNS = (
    "detectorName",
    "measure",
    "timeseriesId",
    "dimensionList",
    "aggregatedMeasureValue",
    "detectionPeriodStartTime",
    "detectionPeriodEndTime",
    "anomalyScore",
    "anomalyDecisionThreshold",
    "anomalyDecision",
    "anomalyConfidenceScore",
    "modelStage",
    "expectedValue",
    "windowStart",
)


def state_dir_for(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_SUBDIR


class AlertService:
    """Turns result records into incident notifications and delivers them from a durable outbox.

    ``observe`` is called by the worker with each batch of results (before it commits offsets);
    it records notifications durably and returns at once. Delivery runs in a background thread
    (``start``/``stop``) or explicitly (``deliver_pending``).

    ``user_hooks``: per detector, more :class:`AlertHook` implementations (a chat or a pager client,
    say) delivered exactly like the configured webhooks and emails; their ``hook_id`` must be stable
    across restarts (outbox rows refer to it). Whatever a hook raises is a failed attempt of that one
    notification (see :meth:`deliver_pending`).

    Example:
        >>> svc = AlertService({"shop": AlertsConfig(webhooks=(WebhookConfig(url=...),))},
        ...                    Path("data/alerts"))  # doctest: +SKIP
        >>> svc.start(); svc.observe(results); svc.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        detectors: Mapping[str, AlertsConfig],
        state_dir: Path,
        delivery: DeliveryConfig | None = None,
        *,
        seed: int | None = None,
        user_hooks: Mapping[str, Sequence[AlertHook]] | None = None,
    ) -> None:
        user_hooks = user_hooks or {}
        self.detectors = {
            name: cfg for name, cfg in detectors.items() if cfg.has_hooks or user_hooks.get(name)
        }
        self.delivery = delivery or DeliveryConfig()
        self.outbox = Outbox(Path(state_dir))
        self._lock_path = Path(state_dir) / "deliver.lock"
        self._lock_fd: int | None = None
        self._lock_warned = False
        self._hooks: dict[str, AlertHook] = {}
        self._detector_hooks: dict[str, list[str]] = {}
        for name, cfg in self.detectors.items():
            ids = []
            hooks: list[AlertHook] = [
                *(WebhookHook(w) for w in cfg.webhooks),
                *(EmailHook(e) for e in cfg.emails),
                *user_hooks.get(name, ()),
            ]
            for hook in hooks:
                self._hooks.setdefault(hook.hook_id, hook)
                ids.append(hook.hook_id)
            self._detector_hooks[name] = ids
        self._open = self.outbox.open_series()
        self._rng = random.Random(seed)
        self._sent: collections.deque[float] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._observe_lock = threading.Lock()
        #: Notifications accepted by an endpoint since this service started (for metrics).
        self.sent_total = 0
        #: Notifications this service moved to the dead letters since it started (for metrics).
        self.dead_lettered_total = 0

    # --- recording ------------------------------------------------------------------------------
    def observe(self, table: pa.Table, now: float | None = None) -> int:
        """Advance incidents with ``table`` (RESULT_SCHEMA rows); returns notifications recorded.

        Idempotent: records a series has already seen (by window start) change nothing, and a
        notification is keyed by its de-duplication key, so a replay after a crash adds nothing.
        """
        if table.num_rows == 0 or not self.detectors:
            return 0
        now = time.time() if now is None else now
        added = 0
        # One contiguous chunk of the needed columns: a worker's concatenated batches can have
        # thousands of chunks, and per-chunk filtering would dominate the cost.
        table = table.select(list(_COLUMNS)).combine_chunks()
        with self._observe_lock:
            dets = table.column("detectorName").to_numpy(zero_copy_only=False)
            present = set(dets.tolist())
            for det in sorted(present & self.detectors.keys()):
                sub = table if len(present) == 1 else table.filter(pa.array(dets == det))
                added += self._observe_detector(det, sub, now)
        if added:
            self._wake.set()
        return added

    def _observe_detector(self, det: str, table: pa.Table, now: float) -> int:
        cfg = self.detectors[det]
        sids = table.column("timeseriesId").to_numpy(zero_copy_only=False)
        anomalous = (table.column("anomalyDecision").to_numpy() == 1) & (
            table.column("modelStage").to_numpy(zero_copy_only=False) == STAGE_INFERENCE
        )
        # Only series with an anomaly in this batch or an open incident need the row-by-row walk.
        wanted = set(sids[anomalous].tolist()) | {s for d, s in self._open if d == det}
        if not wanted:
            return 0
        mask = np.fromiter((s in wanted for s in sids.tolist()), dtype=bool, count=len(sids))
        sub = table.take(pa.array(np.flatnonzero(mask)))
        sub = sub.set_column(
            sub.schema.get_field_index("windowStart"),
            "windowStart",
            sub.column("windowStart").cast(pa.int64()),
        )
        records = sub.to_pylist()
        records.sort(key=lambda r: (r["timeseriesId"], r["windowStart"]))
        states = self.outbox.load_states(det, wanted)
        touched: dict[str, SeriesState] = {}
        events: list[tuple[str, IncidentEvent]] = []
        for rec in records:
            sid = rec["timeseriesId"]
            state = states.get(sid)
            if state is None:
                if not is_anomalous(rec, cfg):
                    continue  # no incident and nothing anomalous: nothing to remember
                state = states[sid] = SeriesState()
            for ev in step(state, rec, cfg):
                events.append((sid, ev))
            touched[sid] = state
        added = self.outbox.commit(det, touched, events, self._detector_hooks[det], now)
        for sid, st in touched.items():
            if st.incident_id is None:
                self._open.discard((det, sid))
            else:
                self._open.add((det, sid))
        for sid, ev in events:
            logger.info(
                "incident %s detector=%s series=%s incident=%s key=%s notify=%s",
                ev.kind,
                det,
                sid[:12],
                ev.incident_id,
                ev.dedup_key,
                "yes" if ev.notify else "no (cool-down)",
            )
        return added

    # --- delivery -------------------------------------------------------------------------------
    def _backoff(self, attempts: int) -> float:
        """Exponential back-off with 'equal jitter': half fixed, half random (never near zero)."""
        d = min(self.delivery.backoff_max_s, self.delivery.backoff_initial_s * 2.0 ** max(0, attempts - 1))
        return d / 2 + self._rng.uniform(0, d / 2)

    def _rate_release(self, now: float) -> float | None:
        """None if a notification may go now, else the time when the rolling minute frees a slot."""
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()
        if len(self._sent) < self.delivery.max_per_minute:
            return None
        return self._sent[0] + 60.0

    def deliver_pending(self, now: float | None = None) -> int:
        """Try every due notification once, oldest first; returns how many endpoints accepted.

        Per hook, notifications go in the order they were recorded: one that waits for a retry
        because its endpoint failed holds back the later ones of the same hook (an 'update' never
        overtakes its 'open'); one that failed on its own (``Attempt.own``: it cannot be built or
        encoded, or its hook raised) holds back only the later ones of its series for that hook.
        Anything a hook raises is a failed attempt of that notification, counted as permanent (the
        same payload runs the same code again), never an end of the pass: every other notification
        is still tried. Notifications over the global rate limit stay in the outbox for a later call.
        """
        if not self._acquire_delivery_lock():
            return 0
        accepted = 0
        blocked: set[str] = set()
        blocked_series: set[tuple[str, tuple[str, str]]] = set()
        for row in self.outbox.pending():
            if self._stopping.is_set() and self._thread is not None:
                break
            hook = self._hooks.get(row.hook)
            if hook is None or row.hook in blocked or (row.hook, row.series_key) in blocked_series:
                continue
            t = time.time() if now is None else now
            if row.next_attempt_at > t:
                self._hold(row, row.own_failure, blocked, blocked_series)
                continue
            if self._rate_release(t) is not None:
                logger.info(
                    "alert rate limit reached max_per_minute=%d: holding the rest in the outbox",
                    self.delivery.max_per_minute,
                )
                break
            result = self._attempt(hook, row)
            t = time.time() if now is None else now
            if result.accepted:
                self._accepted(row, hook, t)
                accepted += 1
            elif (reason := self._give_up(row, result.permanent, t)) is not None:
                # Not blocked: the hook's later rows go on (this one will not come before them).
                self._dead_letter(row, hook, result, reason, t)
            else:
                self._retry_later(row, hook, result, t)
                self._hold(row, result.own, blocked, blocked_series)
        return accepted

    @staticmethod
    def _hold(
        row: OutboxRow, own: bool, blocked: set[str], blocked_series: set[tuple[str, tuple[str, str]]]
    ) -> None:
        """``row`` waits for a retry: hold back its hook's later rows, or only its series' if ``own``."""
        if own:
            blocked_series.add((row.hook, row.series_key))
        else:
            blocked.add(row.hook)

    @staticmethod
    def _attempt(hook: AlertHook, row: OutboxRow) -> Attempt:
        """One attempt; whatever the hook raises is this notification's own permanent failure."""
        try:
            return hook.send(row.payload)
        except Exception as exc:  # any hook, a user's too: one notification must not stop the others
            logger.error(
                "alert hook raised hook=%s endpoint=%s key=%s error=%s",
                row.hook,
                hook.label,
                row.dedup_key,
                type(exc).__name__,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
            # The type only: str(exc) may hold a URL with a token, a password or personal data.
            return Attempt(False, f"{type(exc).__name__} raised by {hook.label}", permanent=True, own=True)

    def _accepted(self, row: OutboxRow, hook: AlertHook, t: float) -> None:
        self.outbox.accepted(row, t)
        self._sent.append(t)
        self.sent_total += 1
        logger.info(
            "alert delivered hook=%s endpoint=%s key=%s attempts=%d",
            row.hook,
            hook.label,
            row.dedup_key,
            row.attempts + 1,
        )

    def _dead_letter(self, row: OutboxRow, hook: AlertHook, result: Attempt, reason: str, t: float) -> None:
        self.outbox.dead_letter(row, result.error or "rejected", result.permanent, reason, t)
        self.dead_lettered_total += 1
        logger.error(
            "alert dead-lettered, no more retries hook=%s endpoint=%s key=%s reason=%s "
            "attempts=%d permanent_rejections=%d error=%r; fix the endpoint, then run "
            "`cutstream outbox --requeue-dead`",
            row.hook,
            hook.label,
            row.dedup_key,
            reason,
            row.attempts + 1,
            row.rejections + int(result.permanent),
            result.error,
        )

    def _retry_later(self, row: OutboxRow, hook: AlertHook, result: Attempt, t: float) -> None:
        delay = self._backoff(row.attempts + 1)
        if result.retry_after_s is not None:
            delay = min(self.delivery.retry_after_max_s, max(result.retry_after_s, 0.0))
        self.outbox.failed(row, result.error or "rejected", t + delay, result.permanent, result.own)
        logger.warning(
            "alert delivery failed hook=%s endpoint=%s key=%s attempt=%d permanent=%s error=%r "
            "retry_in_s=%.2f",
            row.hook,
            hook.label,
            row.dedup_key,
            row.attempts + 1,
            "yes" if result.permanent else "no",
            result.error,
            delay,
        )

    def _give_up(self, row: OutboxRow, permanent: bool, now: float) -> str | None:
        """The dead-letter reason if the attempt on ``row`` that just failed was its last, else None."""
        limit = self.delivery.max_permanent_rejections
        if permanent and limit > 0 and row.rejections + 1 >= limit:
            return REASON_REJECTED
        max_age = self.delivery.give_up_after_s
        if max_age > 0 and now - row.queued_at >= max_age:
            return REASON_EXPIRED
        return None

    def _acquire_delivery_lock(self) -> bool:
        """One deliverer per outbox: workers sharing a data dir all record, one of them sends.

        An exclusive ``flock`` on ``deliver.lock``, held until ``stop()``; the kernel drops it when
        its process dies (even by SIGKILL), so another worker takes over at its next try.
        """
        if self._lock_fd is not None:
            return True
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not self._lock_warned:
                logger.info(
                    "another process delivers from this outbox path=%s; recording only", self._lock_path
                )
                self._lock_warned = True
            return False
        self._lock_fd = fd
        return True

    def _release_delivery_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def next_due(self, now: float) -> float:
        """Seconds until something may be delivered (bounded by ``idle_wait_s``)."""
        wait = self.delivery.idle_wait_s
        release = self._rate_release(now)
        held: set[str] = set()
        held_series: set[tuple[str, tuple[str, str]]] = set()
        for row in self.outbox.pending():
            # The first row of each hook (or, behind an own failure, of each series) that
            # deliver_pending would try: the same holds as there.
            if row.hook in held or row.hook not in self._hooks or (row.hook, row.series_key) in held_series:
                continue
            self._hold(row, row.own_failure, held, held_series)
            due = max(row.next_attempt_at, release or 0.0)
            wait = min(wait, due - now)
        return max(wait, 0.01)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_pending()
                wait = self.next_due(time.time())
            except Exception:  # the thread must survive a bad row or a locked db; the error is logged
                logger.exception("alert delivery loop error; retrying")
                wait = self.delivery.idle_wait_s
            self._wake.wait(wait)
            self._wake.clear()
        self.outbox.close()

    def start(self) -> None:
        """Start the background delivery thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="cutstream-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the delivery thread (pending notifications stay in the outbox for the next start)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        for hook in self._hooks.values():
            hook.close()
        self._release_delivery_lock()

    def pending(self) -> list[OutboxRow]:
        return self.outbox.pending()

    def pending_count(self) -> int:
        """Notifications waiting in the outbox (for metrics)."""
        return self.outbox.pending_count()

    def dead_letters(self, hook: str | None = None) -> list[DeadLetter]:
        """Notifications no longer retried (see ``DeliveryConfig.max_permanent_rejections``)."""
        return self.outbox.dead_letters(hook)

    def dead_letter_count(self) -> int:
        """Notifications in the dead letters (for metrics)."""
        return self.outbox.dead_letter_count()

    def requeue_dead(self, hook: str | None = None, now: float | None = None) -> int:
        """Put dead letters (of ``hook``, or all) back in the outbox, due now; returns how many."""
        n = self.outbox.requeue_dead(time.time() if now is None else now, hook)
        if n:
            self._wake.set()
        return n

    def incidents(self, detector: str | None = None) -> list[dict[str, Any]]:
        return self.outbox.incidents(detector)

    def __enter__(self) -> AlertService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.outbox.close()
