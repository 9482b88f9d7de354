"""The durable outbox and incident state: one SQLite database (WAL, synchronous=FULL).

Protocol: a notification is INSERTed (one row per hook, ``UNIQUE(dedup_key, hook)``, INSERT OR
IGNORE, skipped too when already in ``delivered``) in the same transaction that advances the series'
incident state; it is DELETEd (and its key moved to ``delivered``) only after the endpoint accepted
it. A crash or an endpoint outage therefore delays notifications but never loses them; the one
window for a repeat is a crash between the endpoint's acceptance and that DELETE, and the repeat
carries the same de-duplication key.

Dead letters: a row the endpoint refused permanently too often, or that waited past the configured
age, moves (in one transaction) from ``outbox`` to ``dead_letters`` with its attempts, last error,
reason and time; it is no longer retried, and ``requeue_dead`` moves it back under its original id
(so it keeps its place in its hook's order). ``commit`` skips a key that is dead-lettered, as it
skips a delivered one.

Schema versions (``PRAGMA user_version``): 0, the original layout; 1 adds ``outbox.rejections``,
``outbox.requeued_at`` and ``dead_letters``; 2 adds ``outbox.own_failure`` (the last failure was the
notification's own, so it holds back only its series: see ``Attempt.own``). Opening an older database
migrates it in place; the read-only readers accept every layout.
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

#: ``PRAGMA user_version`` of the layout below (see the module docstring for the history).
SCHEMA_VERSION = 2

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
    rejections INTEGER NOT NULL DEFAULT 0, requeued_at REAL, own_failure INTEGER NOT NULL DEFAULT 0,
    UNIQUE (dedup_key, hook));
CREATE TABLE IF NOT EXISTS delivered (
    dedup_key TEXT NOT NULL, hook TEXT NOT NULL, delivered_at REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (dedup_key, hook));
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    dedup_key TEXT NOT NULL, hook TEXT NOT NULL, detector TEXT NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL,
    rejections INTEGER NOT NULL, last_error TEXT, reason TEXT NOT NULL, dead_at REAL NOT NULL,
    UNIQUE (dedup_key, hook));
"""

#: Columns added to ``outbox`` since version 0, with their definitions (for ALTER TABLE).
_OUTBOX_ADDED = (
    ("rejections", "INTEGER NOT NULL DEFAULT 0"),
    ("requeued_at", "REAL"),
    ("own_failure", "INTEGER NOT NULL DEFAULT 0"),
)

#: Why a row was dead-lettered.
REASON_REJECTED = "rejected"  # max_permanent_rejections permanent refusals
REASON_EXPIRED = "expired"  # still failing give_up_after_s after it was queued


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
    rejections: int = 0
    requeued_at: float | None = None
    #: The last failed attempt was the notification's own (see ``Attempt.own``).
    own_failure: bool = False

    @property
    def series_key(self) -> tuple[str, str]:
        """The series this notification is about (a hook's notices of one series keep their order)."""
        return self.detector, str(self.payload.get("timeseriesId", self.dedup_key))

    @property
    def queued_at(self) -> float:
        """When the row (re)entered the outbox: the start of its ``give_up_after_s`` age."""
        return self.created_at if self.requeued_at is None else self.requeued_at


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A notification no longer retried: refused permanently too often, or given up after an age.

    ``id`` is its outbox id (a requeue puts it back under the same id); ``reason`` is
    ``rejected`` or ``expired``.
    """

    id: int
    dedup_key: str
    hook: str
    detector: str
    kind: str
    payload: dict[str, Any]
    created_at: float
    attempts: int
    rejections: int
    last_error: str | None
    reason: str
    dead_at: float


_ROW_COLUMNS = (
    "id, dedup_key, hook, detector, kind, payload, created_at, next_attempt_at, attempts, last_error, "
    "rejections, requeued_at, own_failure"
)
#: The same for a version-0 / version-1 database not opened for writing since (read-only readers).
_ROW_COLUMNS_V0 = (
    "id, dedup_key, hook, detector, kind, payload, created_at, next_attempt_at, attempts, last_error, "
    "0, NULL, 0"
)
_ROW_COLUMNS_V1 = (
    "id, dedup_key, hook, detector, kind, payload, created_at, next_attempt_at, attempts, last_error, "
    "rejections, requeued_at, 0"
)
_DEAD_COLUMNS = (
    "id, dedup_key, hook, detector, kind, payload, created_at, attempts, rejections, last_error, reason, "
    "dead_at"
)


def _outbox_row(r: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9], r[10], r[11], bool(r[12])
    )


def _dead_letter(r: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9], r[10], r[11])


def _tables(con: sqlite3.Connection) -> set[str]:
    return {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def db_path(state_dir: Path) -> Path:
    return Path(state_dir) / DB_NAME


def read_outbox(state_dir: Path) -> tuple[list[OutboxRow], list[DeadLetter]] | None:
    """Pending notifications and dead letters, opened read-only (None when there is no outbox yet).

    Reads a database of any schema version without migrating it (a version-0 one has no dead letters).
    """
    path = db_path(state_dir)
    if not path.exists():
        return None
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        have = _columns(con, "outbox")
        cols = (
            _ROW_COLUMNS
            if "own_failure" in have
            else _ROW_COLUMNS_V1
            if "rejections" in have
            else _ROW_COLUMNS_V0
        )
        rows = con.execute(f"SELECT {cols} FROM outbox ORDER BY id").fetchall()  # noqa: S608
        dead = (
            con.execute(f"SELECT {_DEAD_COLUMNS} FROM dead_letters ORDER BY dead_at, id").fetchall()  # noqa: S608
            if "dead_letters" in _tables(con)
            else []
        )
    except sqlite3.Error as exc:
        raise SinkError(f"cannot read the alert outbox {path}: {exc}") from exc
    finally:
        con.close()
    return [_outbox_row(r) for r in rows], [_dead_letter(r) for r in dead]


def read_pending(state_dir: Path) -> list[OutboxRow] | None:
    """Pending notifications, opened read-only (None when there is no outbox yet)."""
    got = read_outbox(state_dir)
    return None if got is None else got[0]


class Outbox:
    """Thread-safe access to the outbox database (one SQLite connection per thread)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = db_path(state_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older database to :data:`SCHEMA_VERSION` in place (idempotent, race-safe).

        ``_SCHEMA`` already created the tables that were missing; what is left is the columns added
        to ``outbox``. Done under BEGIN IMMEDIATE and re-checked there, so that workers opening the
        same old database at once alter it only once.
        """
        con = self._conn()
        if int(con.execute("PRAGMA user_version").fetchone()[0]) >= SCHEMA_VERSION:
            return
        with self._tx() as con:
            have = _columns(con, "outbox")
            for name, definition in _OUTBOX_ADDED:
                if name not in have:
                    con.execute(f"ALTER TABLE outbox ADD COLUMN {name} {definition}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
                        "(SELECT 1 FROM delivered WHERE dedup_key = ? AND hook = ?) AND NOT EXISTS "
                        "(SELECT 1 FROM dead_letters WHERE dedup_key = ? AND hook = ?)",
                        (ev.dedup_key, hook, detector, ev.kind, payload, now, now, *(ev.dedup_key, hook) * 2),
                    )
                    added += cur.rowcount
        return added

    # --- delivery -------------------------------------------------------------------------------
    def pending(self, limit: int = 10_000) -> list[OutboxRow]:
        """Pending rows in the order they were recorded."""
        rows = self._conn().execute(f"SELECT {_ROW_COLUMNS} FROM outbox ORDER BY id LIMIT ?", (limit,))  # noqa: S608
        return [_outbox_row(r) for r in rows]

    def accepted(self, row: OutboxRow, now: float) -> None:
        """The endpoint accepted ``row``: clear it, remember its key (a replay will not re-add it)."""
        with self._tx() as con:
            con.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
            con.execute(
                "INSERT OR IGNORE INTO delivered (dedup_key, hook, delivered_at, attempts) "
                "VALUES (?, ?, ?, ?)",
                (row.dedup_key, row.hook, now, row.attempts + 1),
            )

    def failed(
        self, row: OutboxRow, error: str, next_attempt_at: float, permanent: bool = False, own: bool = False
    ) -> None:
        """An attempt failed: count it (and the permanent rejection), schedule the next one; ``own``:
        the failure was the notification's own (it holds back only its series' later notices)."""
        with self._tx() as con:
            con.execute(
                "UPDATE outbox SET attempts = attempts + 1, rejections = rejections + ?, last_error = ?, "
                "next_attempt_at = ?, own_failure = ? WHERE id = ?",
                (int(permanent), error[:500], next_attempt_at, int(own), row.id),
            )

    def dead_letter(self, row: OutboxRow, error: str, permanent: bool, reason: str, now: float) -> None:
        """The attempt that just failed was the last: move ``row`` to ``dead_letters`` (one transaction)."""
        with self._tx() as con:
            cur = con.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
            if cur.rowcount == 0:
                return  # already gone (another process requeued or delivered it meanwhile)
            con.execute(
                f"INSERT OR REPLACE INTO dead_letters ({_DEAD_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.dedup_key,
                    row.hook,
                    row.detector,
                    row.kind,
                    json.dumps(row.payload, sort_keys=True),
                    row.created_at,
                    row.attempts + 1,
                    row.rejections + int(permanent),
                    error[:500],
                    reason,
                    now,
                ),
            )

    def dead_letters(self, hook: str | None = None) -> list[DeadLetter]:
        """Dead letters (of ``hook``, or all), in the order they died."""
        rows = self._conn().execute(
            f"SELECT {_DEAD_COLUMNS} FROM dead_letters WHERE ? IS NULL OR hook = ? ORDER BY dead_at, id",  # noqa: S608
            (hook, hook),
        )
        return [_dead_letter(r) for r in rows]

    def dead_letter_count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def requeue_dead(self, now: float, hook: str | None = None) -> int:
        """Move dead letters (of ``hook``, or all) back to the outbox, due now; returns how many.

        A requeued row keeps its id (its place in its hook's order) and starts afresh: no attempts,
        no rejections, and its ``give_up_after_s`` age counts from ``now``.
        """
        with self._tx() as con:
            con.execute(
                "INSERT OR IGNORE INTO outbox (id, dedup_key, hook, detector, kind, payload, created_at, "
                "next_attempt_at, attempts, last_error, rejections, requeued_at) "
                "SELECT id, dedup_key, hook, detector, kind, payload, created_at, ?, 0, NULL, 0, ? "
                "FROM dead_letters WHERE ? IS NULL OR hook = ?",
                (now, now, hook, hook),
            )
            # Only what is now in the outbox leaves the dead letters: never a row in neither table.
            return int(
                con.execute(
                    "DELETE FROM dead_letters WHERE (? IS NULL OR hook = ?) AND EXISTS (SELECT 1 FROM "
                    "outbox o WHERE o.dedup_key = dead_letters.dedup_key AND o.hook = dead_letters.hook)",
                    (hook, hook),
                ).rowcount
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
