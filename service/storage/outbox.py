"""A local, durable outbox for results Snowflake could not take when they were ready.

When Snowflake is unreachable while a transcript or translation is saved, the pending write (the job as the
worker saw it, the job fields to set, the result) goes to a SQLite file (WAL, synchronous=FULL), one row per
(job id, kind), and the Snowflake store retries it until Snowflake confirms. `applied` records that the job
row already moved, so a retry only writes the result row (with MERGE on JOB_ID: at most one per job).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.jobs.model import Job, now
from service.storage.records import job_from_record

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    job TEXT NOT NULL,
    changes TEXT NOT NULL,
    payload TEXT NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, kind)
);
"""
TRANSCRIPT, TRANSLATION = "transcript", "translation"

# Python errors that mean a bug on our side, not an unreachable Snowflake (OSError is not among them).
_OUR_BUGS = (TypeError, ValueError, KeyError, AttributeError, NameError, IndexError, AssertionError, LookupError)
_SESSION_GONE = {390111, 390112, 390114}  # session no longer exists / expired / token expired


def _snowflake_errno(exc: BaseException) -> int | None:
    code = getattr(exc, "sql_error_code", None) or getattr(exc, "errno", None)
    return code if isinstance(code, int) else None


def is_unreachable(exc: BaseException) -> bool:
    """True when `exc` may mean Snowflake could not be reached (network, session, service, timeouts), False
    for a programming error of ours (a Python TypeError etc., or a SQL compilation error). When in doubt,
    True: a result then waits in the outbox instead of being lost."""
    if isinstance(exc, OSError):
        return True
    if not type(exc).__module__.startswith("snowflake"):
        return not isinstance(exc, _OUR_BUGS + (NotImplementedError,))
    errno = _snowflake_errno(exc)
    return not (errno is not None and 900 <= errno < 3000)  # 000900-002999: SQL compilation errors


def is_session_gone(exc: BaseException) -> bool:
    """The session itself is unusable: open a new one."""
    from snowflake.snowpark.exceptions import SnowparkSessionException

    return isinstance(exc, SnowparkSessionException) or _snowflake_errno(exc) in _SESSION_GONE


@dataclass
class OutboxEntry:
    """One pending result write."""

    job_id: str
    kind: str  # TRANSCRIPT | TRANSLATION
    job: dict[str, Any]  # the job as the worker saw it (job_to_record): its status and attempts fence the update
    changes: dict[str, Any]  # job fields to set (record form: ISO datetimes), the status included
    payload: dict[str, Any]  # the transcript or translation
    applied: bool = False  # the job row already holds `changes`
    created_at: str = field(default_factory=lambda: now().isoformat())

    @property
    def before(self) -> Job:
        return job_from_record(self.job)

    @property
    def after(self) -> Job:
        """The job as it reads once this entry reached Snowflake."""
        return job_from_record({**self.job, **self.changes})


class Outbox:
    """The SQLite file behind the outbox; every method is quick and thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            assert self._conn is not None, "outbox is not open"
            return self._conn.execute(sql, params).fetchall()

    def put(self, entry: OutboxEntry) -> None:
        """Durably record `entry` (replacing an older one of the same job and kind)."""
        self._query(
            "INSERT OR REPLACE INTO outbox (job_id, kind, job, changes, payload, applied, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.job_id,
                entry.kind,
                json.dumps(entry.job, ensure_ascii=False),
                json.dumps(entry.changes, ensure_ascii=False),
                json.dumps(entry.payload, ensure_ascii=False),
                int(entry.applied),
                entry.created_at,
            ),
        )

    def mark_applied(self, entry: OutboxEntry) -> None:
        entry.applied = True
        self._query("UPDATE outbox SET applied = 1 WHERE job_id = ? AND kind = ?", (entry.job_id, entry.kind))

    def remove(self, job_id: str, kind: str | None = None) -> None:
        if kind is None:
            self._query("DELETE FROM outbox WHERE job_id = ?", (job_id,))
        else:
            self._query("DELETE FROM outbox WHERE job_id = ? AND kind = ?", (job_id, kind))

    def entries(self, job_id: str | None = None) -> list[OutboxEntry]:
        """Pending entries (of one job, or all), oldest first; a job's transcript before its translation."""
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id is not None else ("", ())
        rows = self._query(f"SELECT * FROM outbox {where} ORDER BY created_at, kind = 'translation', job_id", params)
        return [
            OutboxEntry(
                job_id=row["job_id"],
                kind=row["kind"],
                job=json.loads(row["job"]),
                changes=json.loads(row["changes"]),
                payload=json.loads(row["payload"]),
                applied=bool(row["applied"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    def get(self, job_id: str, kind: str) -> OutboxEntry | None:
        return next((e for e in self.entries(job_id) if e.kind == kind), None)

    def latest(self) -> dict[str, Job]:
        """Each job with pending entries, as it reads once they reached Snowflake."""
        return {e.job_id: e.after for e in self.entries()}

    def job_ids(self) -> set[str]:
        return {row["job_id"] for row in self._query("SELECT DISTINCT job_id FROM outbox")}
