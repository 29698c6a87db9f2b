"""The embedded default store: SQLite (WAL, synchronous=FULL) for rows, files under `blobs/` for audio."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from service.jobs.model import Batch, Job, JobStatus, check_transition, now
from service.options import Lane
from service.storage.base import Bounds, DuplicateIdempotencyKey, Scheduling
from service.storage.blobs import BlobFiles
from service.storage.records import DATETIME_FIELDS, transcript_fields
from service.storage.sqlite_schema import (
    IDEMPOTENCY_WHERE,
    INDEXES,
    MIGRATIONS,
    SCHEMA,
    fold_options,
    job_to_row,
    rebuild_jobs,
    row_to_batch,
    row_to_job,
)
from service.transcript import Transcript

T = TypeVar("T")
ACTIVE_SQL = "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
DUE = "status = 'queued' AND (not_before IS NULL OR not_before <= :now)"
# The job a claim takes, as one SELECT (`:now`: the claim's time). FIFO: the oldest due job.
FIFO_PICK = f"SELECT id FROM jobs WHERE {DUE} ORDER BY submitted_at, id LIMIT 1"
# Fair: interactive before bulk; then the owner with the fewest jobs running now (owner NULL is one owner);
# then the oldest (submitted_at, id). Cost grows with the lane's owners, not its jobs: `owners` walks the
# lane's distinct owners through `jobs_claim` (a skip-scan, one index seek each), `firsts` takes each owner's
# oldest due job of the lane (a seek), and only those candidates are ordered. Equivalent to ordering every
# due job by (lane, running jobs of its owner, submitted_at, id).
# Interactive jobs are all short (INTERACTIVE_MAX_SECONDS) or a caller waiting: the shortest goes first there
# (the least waiting in all); bulk keeps submission order, so a long file is never overtaken for ever.
SHORTEST = "CASE WHEN {t}.lane = 'interactive' THEN coalesce({t}.audio_seconds, 1e308) ELSE 0 END"
FAIR_PICK = f"""
WITH RECURSIVE
  pick_lane(lane) AS (
    SELECT CASE WHEN :only IS NOT NULL THEN :only
                WHEN EXISTS (SELECT 1 FROM jobs WHERE lane = 'interactive' AND {DUE}) THEN 'interactive'
           ELSE 'bulk' END
  ),
  owners(owner) AS (
    SELECT (SELECT min(owner) FROM jobs WHERE status = 'queued' AND lane = (SELECT lane FROM pick_lane))
    UNION ALL
    SELECT (SELECT min(j.owner) FROM jobs j
            WHERE j.status = 'queued' AND j.lane = (SELECT lane FROM pick_lane) AND j.owner > o.owner)
    FROM owners o WHERE o.owner IS NOT NULL
  ),
  firsts(id) AS (
    SELECT (SELECT j.id FROM jobs j
            WHERE j.status = 'queued' AND j.lane = (SELECT lane FROM pick_lane) AND j.owner IS o.owner
              AND (j.not_before IS NULL OR j.not_before <= :now)
            ORDER BY {SHORTEST.format(t="j")}, j.submitted_at, j.id LIMIT 1)
    FROM (SELECT owner FROM owners WHERE owner IS NOT NULL UNION ALL SELECT NULL) o
  ),
  running(owner, jobs) AS (SELECT owner, count(*) FROM jobs WHERE status = 'running' GROUP BY owner)
SELECT q.id FROM firsts f JOIN jobs q ON q.id = f.id LEFT JOIN running r ON r.owner IS q.owner
ORDER BY coalesce(r.jobs, 0), {SHORTEST.format(t="q")}, q.submitted_at, q.id
LIMIT 1"""


class SQLiteStore(BlobFiles):
    """One connection, used from one worker thread, so every statement is serialised. Every write calls
    `_changed(conn, kind, ids)` inside its transaction: a subclass that mirrors the rows elsewhere (the
    Snowflake store) records there what it must export."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.db_path = data_dir / "jobs.sqlite3"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    def _changed(self, conn: sqlite3.Connection, kind: str, ids: list[str]) -> None:
        """Rows of `kind` (job | transcript | translation | batch | deleted) changed in this transaction."""

    def _schema(self, conn: sqlite3.Connection) -> None:
        """Extra tables a subclass keeps beside the store's own (run at open)."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "store is not open"
        with self._conn:  # one transaction per call: commit on success, roll back on error
            return fn(self._conn)

    async def open(self) -> None:
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.sweep_incoming()

        def connect() -> None:
            conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            present = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, declaration in MIGRATIONS:
                if name not in present:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
            fold_options(conn)  # an earlier release's option columns: into the `options` JSON
            if rebuild_jobs(conn):  # keys were unique across owners (or old columns left): the table was rebuilt
                conn.executescript(SCHEMA)  # its indexes went with the old table
            conn.executescript(INDEXES)
            self._schema(conn)
            conn.isolation_level = "DEFERRED"
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._pool, connect)

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    @staticmethod
    def _insert_job(conn: sqlite3.Connection, job: Job) -> None:
        row = job_to_row(job)
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        try:
            conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", row)
        except sqlite3.IntegrityError:
            existing = SQLiteStore._by_idempotency_key(conn, job.idempotency_key, job.owner)
            if existing is None:
                raise
            raise DuplicateIdempotencyKey(row_to_job(existing)) from None

    @staticmethod
    def _check_bounds(conn: sqlite3.Connection, bounds: Bounds | None, adding: int) -> None:
        """The backlog bounds, counted inside the write's own transaction: exact, however many race."""
        if bounds is None:
            return
        active = conn.execute(ACTIVE_SQL).fetchone()[0]
        mine = conn.execute(ACTIVE_SQL + " AND owner = ?", (bounds.owner,)).fetchone()[0] if bounds.per_owner else None
        bounds.check(adding, active, mine)

    async def add(self, job: Job, audio: Path | None, bounds: Bounds | None = None) -> Job:
        def insert(conn: sqlite3.Connection) -> Job:
            self._check_bounds(conn, bounds, 1)
            self._insert_job(conn, job)
            self._changed(conn, "job", [job.id])
            if audio is not None:
                # The audio is in place before the row commits: a committed job always has its audio.
                self._place_audio(audio, job.id)
            return job

        # Cancelled or not (a client that went away), the worker thread finishes the transaction: its outcome,
        # not the caller's, decides who owns the file. Committed: the job keeps its audio; not: the caller does.
        write = asyncio.ensure_future(self._run(insert))
        try:
            return await asyncio.shield(write)
        except BaseException:
            await asyncio.wait([write])
            committed = not write.cancelled() and write.exception() is None
            if audio is not None and not committed:
                self._return_audio(audio, job.id)
            raise

    async def add_batch(self, batch: Batch, jobs: list[Job], bounds: Bounds | None = None) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            self._check_bounds(conn, bounds, len(jobs))
            conn.execute(
                "INSERT INTO batches (id, stage, pattern, options, created_at, files) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    batch.id,
                    batch.stage,
                    batch.pattern,
                    json.dumps(batch.options.stored(), ensure_ascii=False),
                    batch.created_at.isoformat(),
                    batch.files,
                ),
            )
            for job in jobs:
                self._insert_job(conn, job)
            self._changed(conn, "batch", [batch.id])
            self._changed(conn, "job", [j.id for j in jobs])

        await self._run(insert)

    async def get_batch(self, batch_id: str) -> Batch | None:
        row = await self._run(lambda c: c.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone())
        return row_to_batch(row) if row else None

    async def batch_jobs(self, batch_id: str) -> list[Job]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT * FROM jobs WHERE batch_id = ? ORDER BY submitted_at, id", (batch_id,)
            ).fetchall()
        )
        return [row_to_job(r) for r in rows]

    async def get(self, job_id: str) -> Job | None:
        row = await self._run(lambda c: c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return row_to_job(row) if row else None

    @staticmethod
    def _by_idempotency_key(conn: sqlite3.Connection, key: str | None, owner: str | None) -> sqlite3.Row | None:
        if key is None:
            return None
        return conn.execute(f"SELECT * FROM jobs WHERE {IDEMPOTENCY_WHERE}", (owner or "", key)).fetchone()

    async def find_by_idempotency_key(self, key: str, owner: str | None) -> Job | None:
        row = await self._run(lambda c: self._by_idempotency_key(c, key, owner))
        return row_to_job(row) if row else None

    async def list(
        self, status: JobStatus | None, limit: int, before: tuple[str, str] | None, owner: str | None = None
    ) -> list[Job]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if before is not None:
            where.append("(submitted_at, id) < (?, ?)")
            params.extend(before)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY submitted_at DESC, id DESC LIMIT ?"
        rows = await self._run(lambda c: c.execute(sql, (*params, limit)).fetchall())
        return [row_to_job(r) for r in rows]

    async def claim_next(self, scheduling: Scheduling = "fair", only: Lane | None = None) -> Job | None:
        pick = FAIR_PICK if scheduling == "fair" or only else FIFO_PICK

        def claim(conn: sqlite3.Connection) -> Job | None:
            stamp = now().isoformat()
            row = conn.execute(
                f"""UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = :now,
                       not_before = NULL, progress = 0
                   WHERE id = ({pick})
                   RETURNING *""",
                {"now": stamp, "only": only},
            ).fetchone()
            if row is None:
                return None
            self._changed(conn, "job", [row["id"]])
            return row_to_job(row)

        return await self._run(claim)

    async def set_progress(self, job: Job, fraction: float) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running' AND attempts = ?",
                (fraction, job.id, job.attempts),
            )
        )

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._run(lambda c: c.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        return {row[0]: row[1] for row in rows}

    async def count_active(self, owner: str | None = None) -> int:
        if owner is None:
            return await self._run(lambda c: c.execute(ACTIVE_SQL).fetchone()[0])
        return await self._run(lambda c: c.execute(ACTIVE_SQL + " AND owner = ?", (owner,)).fetchone()[0])

    async def requeue_running(self) -> int:
        def requeue(conn: sqlite3.Connection) -> int:
            moved = [
                row[0]
                for sql in (
                    "UPDATE jobs SET status = 'queued' WHERE status = 'running' RETURNING id",
                    "UPDATE jobs SET status = 'transcribed' WHERE status = 'translating' RETURNING id",
                )
                for row in conn.execute(sql).fetchall()
            ]
            self._changed(conn, "job", moved)
            return len(moved)

        return await self._run(requeue)

    def _transition_sql(self, conn: sqlite3.Connection, job: Job, target: JobStatus, fields: dict) -> bool:
        check_transition(job.status, target)
        values = {"status": target.value, **fields}
        if target.terminal:
            values.setdefault("finished_at", now())
        for key in DATETIME_FIELDS:
            if isinstance(values.get(key), datetime):
                values[key] = values[key].isoformat()
        if "timings" in values:
            values["timings"] = json.dumps(values["timings"])
        assignments = ", ".join(f"{k} = :{k}" for k in values)
        cursor = conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = :_id AND status = :_status AND attempts = :_attempts",
            {**values, "_id": job.id, "_status": job.status.value, "_attempts": job.attempts},
        )
        if cursor.rowcount != 1:
            return False
        self._changed(conn, "job", [job.id])
        return True

    async def transition(self, job: Job, target: JobStatus, **fields: Any) -> bool:
        return await self._run(lambda c: self._transition_sql(c, job, target, fields))

    def _put_transcript(self, conn: sqlite3.Connection, job_id: str, transcript: Transcript) -> None:
        body = transcript.dump()
        conn.execute(
            """INSERT INTO transcripts (job_id, text, language, duration, segments, body, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (job_id) DO UPDATE SET text = excluded.text, language = excluded.language,
                   duration = excluded.duration, segments = excluded.segments, body = excluded.body""",
            (
                job_id,
                transcript.text,
                transcript.language,
                transcript.duration,
                json.dumps(body["segments"], ensure_ascii=False),
                json.dumps(body, ensure_ascii=False),
                now().isoformat(),
            ),
        )
        self._changed(conn, "transcript", [job_id])

    def _put_translation(self, conn: sqlite3.Connection, job_id: str, translation: dict[str, Any]) -> None:
        conn.execute(
            """INSERT OR REPLACE INTO translations
               (job_id, source_language, target_language, text, method, created_at) VALUES (?, ?, ?, ?, ?, ?)""",
            (
                job_id,
                translation.get("source_language"),
                translation["target_language"],
                translation["text"],
                translation["method"],
                now().isoformat(),
            ),
        )
        self._changed(conn, "translation", [job_id])

    async def save_transcript(self, job: Job, transcript: Transcript, target: JobStatus = JobStatus.SUCCEEDED) -> bool:
        def save(conn: sqlite3.Connection) -> bool:
            if not self._transition_sql(conn, job, target, transcript_fields(job, transcript)):
                return False
            self._put_transcript(conn, job.id, transcript)
            return True

        return await self._run(save)

    async def transcript(self, job_id: str) -> Transcript | None:
        row = await self._run(
            lambda c: c.execute("SELECT body FROM transcripts WHERE job_id = ?", (job_id,)).fetchone()
        )
        return Transcript.load(json.loads(row["body"])) if row else None

    async def save_translation(self, job: Job, translation: dict[str, Any]) -> bool:
        def save(conn: sqlite3.Connection) -> bool:
            if not self._transition_sql(conn, job, JobStatus.SUCCEEDED, {"error_code": None, "error_message": None}):
                return False
            self._put_translation(conn, job.id, translation)
            return True

        return await self._run(save)

    async def translation(self, job_id: str) -> dict[str, Any] | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT text, source_language, target_language, method FROM translations WHERE job_id = ?",
                (job_id,),
            ).fetchone()
        )
        return dict(row) if row else None

    def _purgeable(self) -> str:
        """Extra SQL condition on the jobs retention may delete (a subclass keeps rows not yet exported)."""
        return ""

    async def purge(self, rows_before: datetime | None, audio_before: datetime | None) -> tuple[int, int]:
        """Retention, local only: the audio of finished upload jobs that finished before `audio_before`, and
        the finished jobs (rows, transcripts, translations) that finished before `rows_before`. Returns
        (audio files removed, jobs removed)."""
        finished = "status IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL AND finished_at < ?"

        def purge(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
            audio, rows = [], []
            if audio_before is not None:
                sql = f"SELECT id FROM jobs WHERE source_kind = 'upload' AND {finished}"
                audio = [r[0] for r in conn.execute(sql, (audio_before.isoformat(),))]
            if rows_before is not None:
                sql = f"DELETE FROM jobs WHERE {finished}{self._purgeable()} RETURNING id"
                rows = [r[0] for r in conn.execute(sql, (rows_before.isoformat(),)).fetchall()]
            return audio, rows

        audio, rows = await self._run(purge)
        removed = 0
        for job_id in {*audio, *rows}:
            path = self.audio_path(job_id)
            if path.exists():
                path.unlink(missing_ok=True)
                removed += 1
        return removed, len(rows)

    async def delete(self, job_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._changed(conn, "deleted", [job_id])

        await self._run(delete)
        self.audio_path(job_id).unlink(missing_ok=True)
