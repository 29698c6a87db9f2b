"""The Snowflake store: jobs and results in Snowflake tables (sql/01_tables.sql), audio blobs on local disk.

Reads and writes go through the Snowpark DataFrame/Table API only (`table().filter().collect()`,
`create_dataframe().write.save_as_table()`, `Table.update/merge/delete`), so every value is bound by Snowpark
and the same code runs against Snowflake and Snowpark's local-testing emulator. Snowpark is synchronous: every
call runs in one worker thread, so the store's statements never interleave.

Snowflake has no multi-statement transactions here, so each write is one statement whose condition does the
fencing (`UPDATE … WHERE JOB_ID = ? AND STATUS = ? AND ATTEMPTS = ?`, checked by its row count), and results
are written with MERGE on JOB_ID (at most one row per job). A result that cannot reach Snowflake goes to the
local outbox (outbox.py) and is retried in the background; until then reads show the job finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from service.jobs.model import Batch, Job, JobStatus, check_transition, now
from service.storage.base import Bounds, DuplicateIdempotencyKey, StoreUnavailable
from service.storage.blobs import BlobFiles
from service.storage.outbox import TRANSCRIPT, TRANSLATION, Outbox, OutboxEntry, is_session_gone, is_unreachable
from service.storage.records import job_to_record, transcript_fields
from service.storage.snowflake_ops import SnowflakeOps, col
from service.storage.snowflake_schema import BATCHES, JOBS, batch_from_row, batch_values, job_from_row, job_values

if TYPE_CHECKING:
    from snowflake.snowpark import Session

    from service.config import Settings
    from service.storage.snowflake_session import SessionProvider

T = TypeVar("T")
log = logging.getLogger(__name__)
CLAIM_CANDIDATES = 8  # due jobs read per claim; the first one still queued when updated wins


class SnowflakeStore(BlobFiles):
    """JobStore on Snowflake; see the module docstring."""

    def __init__(self, settings: Settings, sessions: SessionProvider) -> None:
        self.settings = settings
        self.sessions = sessions
        self.blob_dir = settings.data_dir / "blobs"
        self.outbox = Outbox(settings.data_dir / "outbox.sqlite3")
        self.ops = SnowflakeOps(self.outbox)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snowflake")
        self._flusher: asyncio.Task[None] | None = None
        # Bounds are counted, then the rows written: writes that add jobs must not interleave (no row locks).
        self._adding = asyncio.Lock()

    # -- plumbing -------------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[Session], T]) -> T:
        try:
            return fn(self.sessions.get())
        except Exception as exc:
            if is_session_gone(exc):
                self.sessions.invalidate()
            if is_unreachable(exc) and not isinstance(exc, StoreUnavailable):
                raise StoreUnavailable(f"Snowflake does not answer: {exc}") from exc
            raise

    async def _local(self, fn: Callable[[], T]) -> T:
        """Outbox-only work, in the same worker thread (ordered with the Snowflake calls)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def open(self) -> None:
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.sweep_incoming()
        await self._local(self.outbox.open)
        if self.settings.snowflake_create_tables:
            await self._run(self.ops.create_tables)
        await self.flush()  # what an earlier process left
        self._flusher = asyncio.create_task(self._flush_loop(), name="snowflake-outbox")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if await self._local(self.outbox.job_ids):
            await self.flush()  # best effort: what stays is flushed by the next process
        await self._local(self.outbox.close)
        self._pool.shutdown(wait=True)

    async def flush(self) -> int:
        """Try every pending outbox entry once; how many are still pending."""
        try:
            return await self._run(self.ops.flush_all)
        except Exception as exc:
            log.warning("outbox: Snowflake still unreachable (%s); %s", type(exc).__name__, exc)
            return len(await self._local(self.outbox.entries))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.outbox_retry_s)
            try:
                if await self._local(self.outbox.job_ids):
                    await self.flush()
            except Exception:  # keep retrying: the entries are safe on disk
                log.exception("outbox: flush failed")

    async def ping(self) -> None:
        await self._run(self.ops.ping)

    # -- jobs and batches -----------------------------------------------------------------------------------

    async def _check_bounds(self, bounds: Bounds | None, adding: int) -> None:
        """Counted before the write, under `_adding`."""
        if bounds is not None:
            mine = await self.count_active(bounds.owner) if bounds.per_owner else None
            bounds.check(adding, await self.count_active(), mine)

    async def add(self, job: Job, audio: Path | None, bounds: Bounds | None = None) -> Job:
        async with self._adding:
            await self._check_bounds(bounds, 1)
            return await self._insert(job, audio)

    async def _insert(self, job: Job, audio: Path | None) -> Job:
        if audio is not None:  # the audio is in place before the row exists: a stored job always has its audio
            self._place_audio(audio, job.id)
        insert = asyncio.ensure_future(self._run(lambda s: self.ops.insert_job(s, job)))
        try:
            existing = await asyncio.shield(insert)
        except BaseException:
            # Cancelled or not, the worker thread finishes the INSERT: its outcome decides who owns the file.
            await asyncio.wait([insert])
            stored = not insert.cancelled() and insert.exception() is None and insert.result() is None
            if audio is not None and not stored:
                self._return_audio(audio, job.id)
            raise
        if existing is not None:
            if audio is not None:
                self._return_audio(audio, job.id)
            raise DuplicateIdempotencyKey(existing)
        return job

    async def add_batch(self, batch: Batch, jobs: list[Job], bounds: Bounds | None = None) -> None:
        def insert(session: Session) -> None:
            session.create_dataframe([batch_values(batch)], schema=BATCHES.struct()).write.save_as_table(
                BATCHES.name, mode="append"
            )
            if not jobs:
                return
            try:  # every job row in one INSERT: all of them or none
                rows = [job_values(j) for j in jobs]
                session.create_dataframe(rows, schema=JOBS.struct()).write.save_as_table(JOBS.name, mode="append")
            except BaseException:
                with contextlib.suppress(Exception):  # no batch without its jobs
                    session.table(BATCHES.name).delete(col("BATCH_ID") == batch.id)
                raise

        async with self._adding:
            await self._check_bounds(bounds, len(jobs))
            await self._run(insert)

    async def get_batch(self, batch_id: str) -> Batch | None:
        row = await self._run(lambda s: self.ops.first(s, BATCHES, "BATCH_ID", batch_id))
        return batch_from_row(row) if row else None

    async def batch_jobs(self, batch_id: str) -> list[Job]:
        def read(session: Session) -> list[Job]:
            table = session.table(JOBS.name)
            rows = table.filter(col("BATCH_ID") == batch_id).sort("SUBMITTED_AT", "JOB_ID").collect()
            return self.ops.overlay([job_from_row(r) for r in rows])

        return await self._run(read)

    async def get(self, job_id: str) -> Job | None:
        pending = await self._local(lambda: self.outbox.entries(job_id))
        if pending:  # answered locally: works while Snowflake is unreachable
            return pending[-1].after
        return await self._run(lambda s: self.ops.get_job(s, job_id))

    async def find_by_idempotency_key(self, key: str) -> Job | None:
        def read(session: Session) -> Job | None:
            row = self.ops.first(session, JOBS, "IDEMPOTENCY_KEY", key)
            return self.ops.overlay([job_from_row(row)])[0] if row else None

        return await self._run(read)

    async def list(
        self, status: JobStatus | None, limit: int, before: tuple[str, str] | None, owner: str | None = None
    ) -> list[Job]:
        return await self._run(lambda s: self.ops.list_jobs(s, status, limit, before, owner))

    async def claim_next(self) -> Job | None:
        return await self._run(lambda s: self.ops.claim(s, CLAIM_CANDIDATES))

    async def set_progress(self, job: Job, fraction: float) -> None:
        def update(session: Session) -> None:
            if self.outbox.entries(job.id):
                return  # the job has moved on
            changes = {"progress": float(fraction)}
            self.ops.fenced_update(session, job.id, JobStatus.RUNNING.value, job.attempts, changes)

        try:
            await self._run(update)
        except Exception as exc:  # progress is advisory: never fail a running job over it
            if not is_unreachable(exc):
                raise
            log.debug("progress of %s not recorded: %s", job.id, exc)

    async def count_by_status(self) -> dict[str, int]:
        return await self._run(self.ops.count_by_status)

    async def count_active(self, owner: str | None = None) -> int:
        if owner is not None:
            return await self._run(lambda s: self.ops.count_active_of(s, owner))
        counts = await self.count_by_status()
        return counts.get(JobStatus.QUEUED.value, 0) + counts.get(JobStatus.RUNNING.value, 0)

    async def requeue_running(self) -> int:
        return await self._run(self.ops.requeue)

    async def transition(self, job: Job, target: JobStatus, **fields: Any) -> bool:
        check_transition(job.status, target)
        if await self._local(lambda: self.ops.moved_on(job)):
            return False
        return await self._run(lambda s: self.ops.prepare(s, job) and self.ops.transition(s, job, target, fields))

    # -- results --------------------------------------------------------------------------------------------

    def _entry(self, kind: str, job: Job, target: JobStatus, fields: dict[str, Any], payload: dict) -> OutboxEntry:
        changes = dict(fields)
        if target.terminal:
            changes.setdefault("finished_at", now())
        probe = job_to_record(Job(**{**job.__dict__, **changes, "status": target}))
        return OutboxEntry(job.id, kind, job_to_record(job), {k: probe[k] for k in (*changes, "status")}, payload)

    async def _save(self, entry: OutboxEntry) -> bool:
        json.dumps(entry.payload)  # a result that cannot be stored is a bug: raise before writing anything
        if await self._local(lambda: self.ops.moved_on(entry.before)):
            return False  # answered locally: works while Snowflake is unreachable

        def save(session: Session) -> bool:
            if not self.ops.prepare(session, entry.before):
                return False
            return self.ops.apply(session, entry, fenced=True)

        try:
            return await self._run(save)
        except Exception as exc:
            if not is_unreachable(exc):
                raise

            def keep() -> bool:
                if self.outbox.entries(entry.job_id):
                    return False  # an earlier result of this job is still pending: this one cannot queue behind it
                self.outbox.put(entry)
                return True

            if not await self._local(keep):
                raise
            log.warning("Snowflake unreachable (%s): %s of %s kept in the local outbox", exc, entry.kind, entry.job_id)
            return True

    async def save_transcript(
        self, job: Job, transcript: dict[str, Any], target: JobStatus = JobStatus.SUCCEEDED
    ) -> bool:
        check_transition(job.status, target)
        fields = transcript_fields(job, transcript)
        return await self._save(self._entry(TRANSCRIPT, job, target, fields, transcript))

    async def _result(self, kind: str, job_id: str) -> dict[str, Any] | None:
        entry = await self._local(lambda: self.outbox.get(job_id, kind))
        if entry is not None:  # answered locally: works while Snowflake is unreachable
            return self.ops.pending_result(entry)
        return await self._run(lambda s: self.ops.result(s, kind, job_id))

    async def transcript(self, job_id: str) -> dict[str, Any] | None:
        return await self._result(TRANSCRIPT, job_id)

    async def save_translation(self, job: Job, translation: dict[str, Any]) -> bool:
        check_transition(job.status, JobStatus.SUCCEEDED)
        fields = {"error_code": None, "error_message": None}
        return await self._save(self._entry(TRANSLATION, job, JobStatus.SUCCEEDED, fields, dict(translation)))

    async def translation(self, job_id: str) -> dict[str, Any] | None:
        return await self._result(TRANSLATION, job_id)

    async def delete(self, job_id: str) -> None:
        await self._run(lambda s: self.ops.delete_job(s, job_id))
        self.audio_path(job_id).unlink(missing_ok=True)
