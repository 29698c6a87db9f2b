"""The Snowflake store's statements: synchronous, run in the store's worker thread, Snowpark DataFrame API only.

Fenced updates (`JOB_ID`, `STATUS` and `ATTEMPTS` in the condition, success = one row updated), MERGE on
JOB_ID for results, and the outbox replay: an entry's job update is retried until Snowflake confirms it,
then its result row is merged, then the entry is removed.
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.jobs.model import Job, JobStatus, now
from service.storage.outbox import TRANSCRIPT, Outbox, OutboxEntry, is_unreachable
from service.storage.snowflake_schema import (
    JOBS,
    TABLES,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    TableSpec,
    assignments,
    expression,
    from_row,
    job_from_row,
    job_values,
    to_db,
    transcript_values,
    translation_values,
)
from service.storage.snowflake_session import is_local

if TYPE_CHECKING:
    from snowflake.snowpark import Column, Row, Session

log = logging.getLogger(__name__)
DDL_PATH = Path(__file__).resolve().parents[2] / "sql" / "01_tables.sql"
TRANSLATION_KEYS = ("text", "source_language", "target_language", "method")


def col(name: str) -> Column:
    from snowflake.snowpark.functions import col as snowpark_col

    return snowpark_col(name)


def ddl_statements(path: Path = DDL_PATH) -> list[str]:
    """The statements of sql/01_tables.sql, comments dropped."""
    from snowflake.connector.util_text import split_statements

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run it by hand and set SPCS_WHISPER_SNOWFLAKE_CREATE_TABLES=false")
    with path.open(encoding="utf-8") as handle:
        text = handle.read()
    statements = (s.strip().rstrip(";").strip() for s, _ in split_statements(io.StringIO(text), remove_comments=True))
    return [s for s in statements if s]


def _page_key(job: Job) -> tuple[datetime, str]:
    return job.submitted_at, job.id


class SnowflakeOps:
    """Statements of the store; `outbox` is consulted so pending results overlay what Snowflake says."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    # -- setup ----------------------------------------------------------------------------------------------

    def create_tables(self, session: Session) -> None:
        if is_local(session):  # the emulator runs no SQL text: empty typed frames make the tables
            for spec in TABLES:
                session.create_dataframe([], schema=spec.struct()).write.save_as_table(spec.name, mode="ignore")
            return
        for statement in ddl_statements():
            session.sql(statement).collect()

    def ping(self, session: Session) -> None:
        if is_local(session):
            session.table(JOBS.name).limit(1).collect()
        else:
            session.sql("SELECT 1").collect()  # no warehouse needed

    # -- reads ----------------------------------------------------------------------------------------------

    def first(self, session: Session, spec: TableSpec, column: str, value: Any, *columns: str) -> Row | None:
        frame = session.table(spec.name).filter(col(column) == value)
        rows = (frame.select(*columns) if columns else frame).limit(1).collect()
        return rows[0] if rows else None

    def overlay(self, jobs: list[Job]) -> list[Job]:
        """Jobs with a pending result, as they read once it reached Snowflake."""
        pending = self.outbox.latest()
        return [pending.get(j.id, j) for j in jobs]

    def get_job(self, session: Session, job_id: str) -> Job | None:
        row = self.first(session, JOBS, "JOB_ID", job_id)
        return job_from_row(row) if row else None

    def list_jobs(
        self,
        session: Session,
        status: JobStatus | None,
        limit: int,
        before: tuple[str, str] | None,
        owner: str | None = None,
    ) -> list[Job]:
        pending = {k: j for k, j in self.outbox.latest().items() if owner is None or j.owner == owner}
        frame = session.table(JOBS.name)
        if status is not None:
            frame = frame.filter(col("STATUS") == status.value)
        if owner is not None:
            frame = frame.filter(col("OWNER") == owner)
        bound = None
        if before is not None:
            bound = (to_db(JOBS.column("submitted_at"), before[0]), before[1])
            stamp = expression(JOBS.column("submitted_at"), bound[0])
            frame = frame.filter(
                (col("SUBMITTED_AT") < stamp) | ((col("SUBMITTED_AT") == stamp) & (col("JOB_ID") < before[1]))
            )
        fetch = limit + len(pending)
        rows = frame.sort(col("SUBMITTED_AT").desc(), col("JOB_ID").desc()).limit(fetch).collect()
        jobs = [job_from_row(r) for r in rows]
        floor = _page_key(jobs[-1]) if len(jobs) == fetch else None  # below it, Snowflake's rows were cut off
        seen = {j.id for j in jobs}
        jobs = [pending.get(j.id, j) for j in jobs]
        for job in pending.values():
            key = _page_key(job)
            if job.id not in seen and (bound is None or key < bound) and (floor is None or key >= floor):
                jobs.append(job)
        jobs = [j for j in jobs if status is None or j.status == status]
        return sorted(jobs, key=_page_key, reverse=True)[:limit]

    def count_by_status(self, session: Session) -> dict[str, int]:
        rows = session.table(JOBS.name).group_by("STATUS").count().collect()
        counts = {row["STATUS"]: int(row["COUNT"]) for row in rows}
        for entry in self.outbox.entries():
            if not entry.applied:  # Snowflake still shows the status the job had before
                source, target = entry.job["status"], entry.changes["status"]
                counts[source] = counts.get(source, 0) - 1
                counts[target] = counts.get(target, 0) + 1
        return {k: v for k, v in counts.items() if v > 0}

    def count_active_of(self, session: Session, owner: str) -> int:
        """Queued or running jobs of one owner (those whose result waits in the outbox are done)."""
        frame = session.table(JOBS.name).filter(col("STATUS").isin("queued", "running") & (col("OWNER") == owner))
        done = [e.job_id for e in self.outbox.entries() if not e.applied]
        if done:
            frame = frame.filter(~col("JOB_ID").isin(done))
        return frame.count()

    @staticmethod
    def pending_result(entry: OutboxEntry) -> dict[str, Any]:
        """The transcript or translation an outbox entry holds, as `result` would read it."""
        if entry.kind == TRANSCRIPT:
            return entry.payload
        return {k: entry.payload.get(k) for k in TRANSLATION_KEYS}

    def result(self, session: Session, kind: str, job_id: str) -> dict[str, Any] | None:
        """The stored transcript (the whole document) or translation (TRANSLATION_KEYS) of a job."""
        if kind == TRANSCRIPT:
            row = self.first(session, TRANSCRIPTIONS, "JOB_ID", job_id, "BODY")
            return from_row(TRANSCRIPTIONS, row)["body"] if row else None
        row = self.first(session, TRANSLATIONS, "JOB_ID", job_id)
        return {k: from_row(TRANSLATIONS, row)[k] for k in TRANSLATION_KEYS} if row else None

    # -- job writes -----------------------------------------------------------------------------------------

    def insert_job(self, session: Session, job: Job) -> Job | None:
        """Insert the job; with an idempotency key, only if no job holds it (one MERGE, atomic in Snowflake).
        Returns the job that already holds the key, else None."""
        from snowflake.snowpark.functions import when_not_matched

        source = session.create_dataframe([job_values(job)], schema=JOBS.struct())
        if job.idempotency_key is None:
            source.write.save_as_table(JOBS.name, mode="append")
            return None
        table = session.table(JOBS.name)
        inserted = table.merge(
            source,
            table["IDEMPOTENCY_KEY"] == source["IDEMPOTENCY_KEY"],
            [when_not_matched().insert({c: source[c] for c in JOBS.names})],
        ).rows_inserted
        if inserted == 1:
            return None
        row = self.first(session, JOBS, "IDEMPOTENCY_KEY", job.idempotency_key)
        if row is None:
            raise RuntimeError(f"job {job.id} was neither inserted nor found by its idempotency key")
        return self.overlay([job_from_row(row)])[0]

    def fenced_update(self, session: Session, job_id: str, status: str, attempts: int, changes: dict) -> bool:
        """Set `changes` on the job only while it is in `status` and `attempts`; True if it was."""
        condition = (col("JOB_ID") == job_id) & (col("STATUS") == status) & (col("ATTEMPTS") == attempts)
        return session.table(JOBS.name).update(assignments(JOBS, changes), condition).rows_updated == 1

    def transition(self, session: Session, job: Job, target: JobStatus, fields: dict[str, Any]) -> bool:
        changes: dict[str, Any] = {"status": target.value, **fields}
        if target.terminal:
            changes.setdefault("finished_at", now())
        return self.fenced_update(session, job.id, job.status.value, job.attempts, changes)

    def claim(self, session: Session, candidates: int) -> Job | None:
        stamp = now()
        skip = self.outbox.job_ids()  # their results are waiting in the outbox: never run them again
        due = (col("STATUS") == JobStatus.QUEUED.value) & (
            col("NOT_BEFORE").is_null() | (col("NOT_BEFORE") <= expression(JOBS.column("not_before"), stamp))
        )
        rows = session.table(JOBS.name).filter(due).sort("SUBMITTED_AT", "JOB_ID").limit(candidates + len(skip))
        for row in rows.collect():
            job = job_from_row(row)
            if job.id in skip:
                continue
            changes = {
                "status": JobStatus.RUNNING,
                "attempts": job.attempts + 1,
                "started_at": stamp,
                "not_before": None,
                "progress": 0.0,
            }
            if self.fenced_update(session, job.id, JobStatus.QUEUED.value, job.attempts, changes):
                return replace(job, **changes)
        return None

    def requeue(self, session: Session) -> int:
        skip = sorted(self.outbox.job_ids())
        table, moved = session.table(JOBS.name), 0
        for source, target in ((JobStatus.RUNNING, JobStatus.QUEUED), (JobStatus.TRANSLATING, JobStatus.TRANSCRIBED)):
            condition = col("STATUS") == source.value
            if skip:
                condition = condition & ~col("JOB_ID").isin(skip)
            moved += table.update(assignments(JOBS, {"status": target.value}), condition).rows_updated
        return moved

    def delete_job(self, session: Session, job_id: str) -> None:
        for spec in (TRANSCRIPTIONS, TRANSLATIONS, JOBS):
            session.table(spec.name).delete(col("JOB_ID") == job_id)
        self.outbox.remove(job_id)

    # -- results and the outbox -----------------------------------------------------------------------------

    def moved_on(self, job: Job) -> bool:
        """A pending result shows the job is no longer in `job`'s status and attempt (no Snowflake needed)."""
        pending = self.outbox.entries(job.id)
        return bool(pending) and (pending[-1].after.status, pending[-1].after.attempts) != (job.status, job.attempts)

    def prepare(self, session: Session, job: Job) -> bool:
        """Before writing `job`: False if a pending result shows it moved on; else flush its pending results."""
        if self.moved_on(job):
            return False
        for entry in self.outbox.entries(job.id):
            self.apply(session, entry, fenced=False)
        return True

    def merge_result(self, session: Session, entry: OutboxEntry) -> None:
        """Write the transcript or translation row: MERGE on JOB_ID, so there is never a second row."""
        from snowflake.snowpark.functions import when_matched, when_not_matched

        job, stamp = entry.after, now()
        if entry.kind == TRANSCRIPT:
            spec, values = TRANSCRIPTIONS, transcript_values(job, entry.payload, stamp)
        else:
            spec, values = TRANSLATIONS, translation_values(job.id, entry.payload, stamp)
        source = session.create_dataframe([values], schema=spec.struct())
        table = session.table(spec.name)
        table.merge(
            source,
            table["JOB_ID"] == source["JOB_ID"],
            [
                when_matched().update({c: source[c] for c in spec.names if c not in ("JOB_ID", "CREATED_AT")}),
                when_not_matched().insert({c: source[c] for c in spec.names}),
            ],
        )

    def apply(self, session: Session, entry: OutboxEntry, fenced: bool) -> bool:
        """Move the job and write its result. `fenced` (a fresh save): False, and nothing written, when the job
        moved on. Otherwise `entry` sits in the outbox: it is marked and removed as Snowflake confirms."""
        if not entry.applied:
            before = entry.before
            moved = self.fenced_update(session, entry.job_id, before.status.value, before.attempts, entry.changes)
            if not moved and (fenced or not self._reconcile(session, entry)):
                return False
            entry.applied = True
            if not fenced:
                self.outbox.mark_applied(entry)
        self.merge_result(session, entry)
        if not fenced:
            self.outbox.remove(entry.job_id, entry.kind)
        return True

    def _reconcile(self, session: Session, entry: OutboxEntry) -> bool:
        """The fenced update of a pending entry matched nothing: True when the job row now holds the entry's
        changes; False when the entry was dropped (job deleted or finished otherwise) or must wait."""
        current = self.get_job(session, entry.job_id)
        before, after = entry.before, entry.after
        if current is not None and current.status == after.status and current.attempts == before.attempts:
            return True  # an earlier try got through, its answer did not
        if current is None or current.status.terminal:
            log.warning("outbox: %s of %s dropped: the job is %s", entry.kind, entry.job_id, current and current.status)
            self.outbox.remove(entry.job_id, entry.kind)
            return False
        # Another process requeued the job meanwhile: the stored result wins and fences that run out.
        log.warning("outbox: %s of %s applied over status %s", entry.kind, entry.job_id, current.status)
        return self.fenced_update(session, entry.job_id, current.status.value, current.attempts, entry.changes)

    def flush_all(self, session: Session) -> int:
        """Replay every pending entry; stops at the first sign of an unreachable Snowflake. Returns how many
        entries are still pending."""
        for entry in self.outbox.entries():
            try:
                self.apply(session, entry, fenced=False)
            except Exception as exc:
                if is_unreachable(exc):
                    raise
                log.exception("outbox: %s of %s failed; kept for the next try", entry.kind, entry.job_id)
        return len(self.outbox.entries())
