"""The durable outbox and incident state: one SQLite database (WAL, synchronous=FULL).

Protocol: a notification is INSERTed (one row per hook, ``UNIQUE(dedup_key, hook)``, INSERT OR
IGNORE, skipped too when already in ``delivered``) in the same transaction that advances the series'
incident state; it is DELETEd (and its key moved to ``delivered``) only after the endpoint accepted
it. A crash or an endpoint outage therefore delays notifications but never loses them; the one
window for a repeat is a crash between the endpoint's acceptance and that DELETE, and the repeat
carries the same de-duplication key.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sinks.alerts.incidents import IncidentEvent, SeriesState
from sinks.errors import SinkError

DB_NAME = "outbox.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series_state (
    detector TEXT NOT NULL, series_id TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (detector, series_id));
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY, detector TEXT NOT NULL, measure TEXT NOT NULL, timeseries_id TEXT NOT NULL,
    dimensions TEXT NOT NULL, window_start TEXT NOT NULL, last_anomaly_at TEXT NOT NULL,
    anomalous_windows INTEGER NOT NULL, score REAL, status TEXT NOT NULL, announced INTEGER NOT NULL,
    facts TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL, hook TEXT NOT NULL, detector TEXT NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    UNIQUE (dedup_key, hook));
CREATE TABLE IF NOT EXISTS delivered (
    dedup_key TEXT NOT NULL, hook TEXT NOT NULL, delivered_at REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (dedup_key, hook));
"""


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    """One pending notification for one hook."""

    id: int
    dedup_key: str
    hook: str
    detector: str
    kind: str
    payload: dict[str, Any]
    created_at: float
    next_attempt_at: float
    attempts: int
    last_error: str | None


def db_path(state_dir: Path) -> Path:
    return Path(state_dir) / DB_NAME


def read_pending(state_dir: Path) -> list[OutboxRow] | None:
    """Pending notifications, opened read-only (None when there is no outbox yet)."""
    path = db_path(state_dir)
    if not path.exists():
        return None
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = con.execute(
            "SELECT id, dedup_key, hook, detector, kind, payload, created_at, next_attempt_at, attempts, "
            "last_error FROM outbox ORDER BY id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise SinkError(f"cannot read the alert outbox {path}: {exc}") from exc
    finally:
        con.close()
    return [OutboxRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9]) for r in rows]


class Outbox:
    """Thread-safe access to the outbox database (one SQLite connection per thread)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = db_path(state_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
                con.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:
                raise SinkError(f"cannot open the alert outbox {self.path}: {exc}") from exc
            self._local.con = con
        return con

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = self._conn()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # --- incident state -------------------------------------------------------------------------
    def load_states(self, detector: str, series_ids: Iterable[str]) -> dict[str, SeriesState]:
        ids = list(series_ids)
        out: dict[str, SeriesState] = {}
        con = self._conn()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for sid, state in con.execute(
                f"SELECT series_id, state FROM series_state WHERE detector = ? AND series_id IN ({marks})",  # noqa: S608
                [detector, *chunk],
            ):
                out[sid] = SeriesState.from_json(json.loads(state))
        return out

    def open_series(self) -> set[tuple[str, str]]:
        """(detector, series) pairs that have an open incident (their normal windows matter)."""
        rows = self._conn().execute(
            "SELECT detector, series_id FROM series_state "
            "WHERE json_extract(state, '$.incident_id') IS NOT NULL"
        )
        return {(d, s) for d, s in rows}

    def commit(
        self,
        detector: str,
        states: dict[str, SeriesState],
        events: list[tuple[str, IncidentEvent]],
        hooks: list[str],
        now: float,
    ) -> int:
        """Atomically store ``states`` and enqueue ``events`` (series, event) for every hook.

        Returns how many outbox rows were added (0 for a replay of what was already recorded).
        """
        added = 0
        with self._tx() as con:
            con.executemany(
                "INSERT INTO series_state (detector, series_id, state) VALUES (?, ?, ?) "
                "ON CONFLICT (detector, series_id) DO UPDATE SET state = excluded.state",
                [(detector, sid, json.dumps(st.to_json())) for sid, st in states.items()],
            )
            for sid, ev in events:
                f, inc = ev.facts, ev.facts["incident"]
                con.execute(
                    "INSERT INTO incidents (incident_id, detector, measure, timeseries_id, dimensions, "
                    "window_start, last_anomaly_at, anomalous_windows, score, status, announced, facts, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (incident_id) DO UPDATE SET last_anomaly_at = excluded.last_anomaly_at, "
                    "anomalous_windows = excluded.anomalous_windows, score = excluded.score, "
                    "status = excluded.status, announced = MAX(announced, excluded.announced), "
                    "facts = excluded.facts, updated_at = excluded.updated_at",
                    (
                        ev.incident_id,
                        detector,
                        f["measure"],
                        sid,
                        json.dumps(f["dimensions"], sort_keys=True),
                        inc["openedAt"],
                        inc["lastAnomalyAt"],
                        inc["anomalousWindows"],
                        inc["peakScore"],
                        inc["status"],
                        int(ev.notify),
                        json.dumps(f),
                        now,
                        now,
                    ),
                )
                payload = json.dumps({"dedupKey": ev.dedup_key, **ev.facts}, sort_keys=True)
                for hook in hooks if ev.notify else ():
                    cur = con.execute(
                        "INSERT OR IGNORE INTO outbox (dedup_key, hook, detector, kind, payload, created_at, "
                        "next_attempt_at) SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
                        "(SELECT 1 FROM delivered WHERE dedup_key = ? AND hook = ?)",
                        (ev.dedup_key, hook, detector, ev.kind, payload, now, now, ev.dedup_key, hook),
                    )
                    added += cur.rowcount
        return added

    # --- delivery -------------------------------------------------------------------------------
    def pending(self, limit: int = 10_000) -> list[OutboxRow]:
        """Pending rows in the order they were recorded."""
        rows = self._conn().execute(
            "SELECT id, dedup_key, hook, detector, kind, payload, created_at, next_attempt_at, attempts, "
            "last_error FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        )
        return [
            OutboxRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9]) for r in rows
        ]

    def accepted(self, row: OutboxRow, now: float) -> None:
        """The endpoint accepted ``row``: clear it, remember its key (a replay will not re-add it)."""
        with self._tx() as con:
            con.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
            con.execute(
                "INSERT OR IGNORE INTO delivered (dedup_key, hook, delivered_at, attempts) "
                "VALUES (?, ?, ?, ?)",
                (row.dedup_key, row.hook, now, row.attempts + 1),
            )

    def failed(self, row: OutboxRow, error: str, next_attempt_at: float) -> None:
        with self._tx() as con:
            con.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (error[:500], next_attempt_at, row.id),
            )

    def pending_count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM outbox").fetchone()[0])

    def retry_now(self) -> int:
        """Make every pending notification due at once (after an endpoint was fixed); returns how many."""
        with self._tx() as con:
            return int(con.execute("UPDATE outbox SET next_attempt_at = 0").rowcount)

    def delivered_keys(self) -> list[tuple[str, str]]:
        return [
            (k, h) for k, h in self._conn().execute("SELECT dedup_key, hook FROM delivered ORDER BY rowid")
        ]

    def incidents(self, detector: str | None = None) -> list[dict[str, Any]]:
        """Incidents (announced or held silent by the cool-down), oldest first."""
        cur = self._conn().execute(
            "SELECT incident_id, detector, timeseries_id, status, announced, facts FROM incidents "
            "WHERE ? IS NULL OR detector = ? ORDER BY created_at, rowid",
            (detector, detector),
        )
        return [
            {
                "incident_id": i,
                "detector": d,
                "timeseries_id": s,
                "status": st,
                "announced": bool(a),
                "facts": json.loads(f),
            }
            for i, d, s, st, a, f in cur
        ]
