"""Group-commit export of the local store into Snowflake tables: one MERGE per table per flush.

A flush takes the pending marks (kind, id, version) and the rows they name from SQLite in one read, then
runs, in its own thread, at most one statement per table: MERGE TRANSCRIPTION_BATCHES, TRANSCRIPTIONS,
TRANSLATIONS, TRANSCRIPTION_JOBS (results before the job rows, so a job that reads `succeeded` in Snowflake
has its transcript there), then one DELETE per table for deleted jobs. After each statement the marks it
covered are cleared, only where their version is unchanged: a row that changed during the flush goes out
again in the next one. A MERGE on the key is idempotent, so a statement whose reply was lost, or a crash
before the marks were cleared, only writes the same rows again.

MERGE semantics relied on: a source row matching no target row is inserted, one matching a row updates it,
and the source never holds a key twice (that would make the MERGE nondeterministic).
https://docs.snowflake.com/en/sql-reference/sql/merge
Snowpark round trips: the MERGE source is a typed `create_dataframe` (no DESCRIBE needed for its schema);
sources of 512 values or more become one temporary table and a bound INSERT (Snowpark's array binding), so
a flush of any size stays a fixed number of statements. Values are always bound by Snowpark, never spliced.
https://docs.snowflake.com/en/developer-guide/snowpark/reference/python/latest/snowpark/api/snowflake.snowpark.Session.create_dataframe
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from service.storage.snowflake_adopt import (
    Inherited,
    adopted,
    read_old_outbox,
    read_snowflake,
    retire_old_outbox,
    take_in,
)
from service.storage.snowflake_schema import (
    BATCHES,
    JOBS,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    TableSpec,
    batch_values,
    job_values,
    transcript_values,
    translation_values,
)
from service.storage.snowflake_session import is_session_gone
from service.storage.snowflake_tables import SchemaMismatch, prepare_tables
from service.storage.sqlite_schema import row_to_batch, row_to_job
from service.transcript import Transcript

if TYPE_CHECKING:
    from snowflake.snowpark import Session

    from service.config import Settings
    from service.storage.snowflake import SnowflakeStore
    from service.storage.snowflake_session import SessionSource

T = TypeVar("T")
log = logging.getLogger(__name__)
MAX_BACKOFF_S = 300.0

EXPORTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS export_meta (key TEXT PRIMARY KEY, value TEXT);
"""
KINDS = ("batch", "transcript", "translation", "job", "deleted")  # the order a flush writes them in
Mark = tuple[str, str, int]  # kind, id, version


@dataclass
class ExportStatus:
    """What /readyz and /metrics tell about the export (the gateway stays ready while Snowflake is away)."""

    pending: int = 0
    statements: int = 0
    last_success: float | None = None  # time.time()
    last_error: str | None = None
    failures: int = 0  # consecutive failed flushes


@dataclass
class Snapshot:
    """The pending marks and the rows they name, read from SQLite in one transaction."""

    marks: dict[str, list[Mark]] = field(default_factory=dict)
    rows: dict[str, list[list[Any]]] = field(default_factory=dict)


def _stamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def read_snapshot(conn: sqlite3.Connection, limit: int) -> Snapshot:
    """Up to `limit` marks of each kind and the current rows they name (a deleted job has none)."""
    snap = Snapshot()
    for kind in KINDS:
        marks = conn.execute("SELECT kind, id, version FROM exports WHERE kind = ? LIMIT ?", (kind, limit)).fetchall()
        if not marks:
            continue
        snap.marks[kind] = [tuple(m) for m in marks]
        ids = [m[1] for m in marks]
        if kind != "deleted":
            snap.rows[kind] = _rows(conn, kind, ids)
    return snap


def _rows(conn: sqlite3.Connection, kind: str, ids: list[str]) -> list[list[Any]]:
    marks = ",".join("?" * len(ids))
    if kind == "job":
        return [job_values(row_to_job(r)) for r in conn.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", ids)]
    if kind == "batch":
        return [
            batch_values(row_to_batch(r)) for r in conn.execute(f"SELECT * FROM batches WHERE id IN ({marks})", ids)
        ]
    # The arg-type ignores below: created_at is NOT NULL in both tables, so `_stamp` gives a datetime there.
    if kind == "transcript":
        sql = f"SELECT j.*, t.body AS _body, t.created_at AS _created FROM transcripts t JOIN jobs j ON j.id = t.job_id WHERE t.job_id IN ({marks})"  # noqa: E501
        return [
            transcript_values(row_to_job(r), Transcript.load(json.loads(r["_body"])), _stamp(r["_created"]))  # type: ignore[arg-type]
            for r in conn.execute(sql, ids)
        ]
    rows = conn.execute(f"SELECT * FROM translations WHERE job_id IN ({marks})", ids)
    return [translation_values(r["job_id"], dict(r), _stamp(r["created_at"])) for r in rows]  # type: ignore[arg-type]


TARGETS: dict[str, TableSpec] = {
    "batch": BATCHES,
    "transcript": TRANSCRIPTIONS,
    "translation": TRANSLATIONS,
    "job": JOBS,
}


def merge_rows(session: Session, spec: TableSpec, rows: list[list[Any]]) -> None:
    """One MERGE on the table's key: new rows inserted, existing ones set to the source's values."""
    from snowflake.snowpark.functions import when_matched, when_not_matched

    key = spec.columns[0].name
    source = session.create_dataframe(rows, schema=spec.struct())
    table = session.table(spec.name)
    table.merge(
        source,
        table[key] == source[key],
        [
            when_matched().update({c: source[c] for c in spec.names if c != key}),
            when_not_matched().insert({c: source[c] for c in spec.names}),
        ],
    )


def delete_jobs(session: Session, job_ids: list[str]) -> int:
    """The deleted jobs' rows, one DELETE per table; returns the statements run."""
    from snowflake.snowpark.functions import col

    for spec in (TRANSCRIPTIONS, TRANSLATIONS, JOBS):
        session.table(spec.name).delete(col("JOB_ID").isin(job_ids))
    return 3


class Exporter:
    """Flushes the store's marks to Snowflake; woken by `poke()` after local writes."""

    def __init__(self, store: SnowflakeStore, sessions: SessionSource, settings: Settings) -> None:
        self.store, self.sessions, self.settings = store, sessions, settings
        self.status = ExportStatus()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snowflake-export")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._prepared = False

    def poke(self) -> None:
        """Local rows changed: a flush follows within `export_interval_s`."""
        self._wake.set()

    async def _snowflake(self, fn: Callable[[Session], T]) -> T:
        def call() -> T:
            try:
                return fn(self.sessions.get())
            except Exception as exc:
                if is_session_gone(exc):
                    self.sessions.invalidate()
                raise

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def open(self) -> None:
        try:  # before the dispatcher starts: the tables are as sql/01_tables.sql makes them, and an earlier
            # release's unfinished jobs join the queue first
            await self._prepare()
        except SchemaMismatch:
            raise  # refuse to start: `make deploy` (sql/01_tables.sql) must run first
        except Exception as exc:  # the queue works without Snowflake; the export checks again before it writes
            log.warning("Snowflake not reachable at start (%s); the export will check and retry", exc)
        self._wake.set()  # what an earlier process left
        self._task = asyncio.create_task(self._loop(), name="snowflake-export")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout=self.settings.gateway.drain_timeout_s or None)
        except Exception as exc:
            log.warning("export on shutdown incomplete (%s): the next start exports the rest", exc)
        self._pool.shutdown(wait=True)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.settings.snowflake.export_interval_s)  # the group-commit window
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the marks are safe on disk: back off and retry
                delay = min(
                    self.settings.snowflake.export_retry_s * 2 ** min(self.status.failures - 1, 10), MAX_BACKOFF_S
                )
                log.warning("export to Snowflake failed (%s: %s); retry in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def flush(self) -> int:
        """Export every pending mark; returns how many are left (0 unless rows changed meanwhile). Raises
        when Snowflake fails; the marks it did not clear stay for the next try."""
        async with self._flushing:
            try:
                if not self._prepared:
                    await self._prepare()
                while True:
                    snap = await self.store._run(lambda c: read_snapshot(c, self.settings.snowflake.export_max_rows))
                    if not snap.marks:
                        break
                    await self._write(snap)
            except Exception as exc:
                self.status.failures += 1
                self.status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                self.status.pending = await self.pending()
                raise
            self.status.failures, self.status.last_error = 0, None
            self.status.last_success = time.time()
            self.status.pending = await self.pending()
            return self.status.pending

    async def _prepare(self) -> None:
        """Before the first export: the tables checked (never created or replaced on an account: DDL is
        `make deploy`'s), then, once per data folder, what an earlier release left (snowflake_adopt.py)."""
        await self._snowflake(prepare_tables)
        if not await self.store._run(adopted):
            inherited = Inherited()
            await self._snowflake(lambda s: read_snowflake(s, inherited))
            read_old_outbox(self.settings.gateway.data_dir, inherited)
            taken = await self.store._run(lambda c: take_in(self.store, c, inherited))
            retire_old_outbox(self.settings.gateway.data_dir)
            if taken:
                log.warning("took %d unfinished jobs of an earlier release into the local queue", taken)
        self._prepared = True

    async def _write(self, snap: Snapshot) -> None:
        for kind in KINDS:
            if marks := snap.marks.get(kind):
                await self._write_kind(kind, marks, snap.rows.get(kind, []))

    async def _write_kind(self, kind: str, marks: list[Mark], rows: list[list[Any]]) -> None:
        """One statement for one kind of mark, then its marks cleared."""
        if kind == "deleted":
            ids = [m[1] for m in marks]
            self.status.statements += await self._snowflake(lambda s: delete_jobs(s, ids))
        elif rows:
            spec = TARGETS[kind]
            await self._snowflake(lambda s: merge_rows(s, spec, rows))
            self.status.statements += 1
        await self.store._run(lambda c: _clear(c, marks))

    async def pending(self) -> int:
        return await self.store._run(lambda c: c.execute("SELECT count(*) FROM exports").fetchone()[0])


def _clear(conn: sqlite3.Connection, marks: list[Mark]) -> None:
    """Marks whose rows reached Snowflake; a mark whose version moved meanwhile stays."""
    conn.executemany("DELETE FROM exports WHERE kind = ? AND id = ? AND version = ?", marks)
