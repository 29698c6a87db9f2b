"""Upgrading from the release that kept the job queue in Snowflake tables: once, before its first export, the
Snowflake store takes into its local queue every unfinished job of TRANSCRIPTION_JOBS and every result that
release left in its local outbox (`DATA_DIR/outbox.sqlite3`), so no accepted job is dropped by the upgrade.

Jobs that were running go back to the queue and translating ones back to transcribed, as after any restart;
a transcribed job whose transcript cannot be found runs again. Finished jobs stay where they are: in the
Snowflake tables, which remain their record. Two statements at most (jobs, then their transcripts).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.jobs.model import Job, JobStatus
from service.storage.records import job_from_record
from service.storage.snowflake_schema import JOBS, TRANSCRIPTIONS, from_row, job_from_row
from service.transcript import Transcript

if TYPE_CHECKING:
    from snowflake.snowpark import Session

    from service.storage.snowflake import SnowflakeStore

log = logging.getLogger(__name__)
UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.TRANSCRIBED, JobStatus.TRANSLATING)
RESTART = {JobStatus.RUNNING: JobStatus.QUEUED, JobStatus.TRANSLATING: JobStatus.TRANSCRIBED}
OLD_OUTBOX = "outbox.sqlite3"


@dataclass
class Inherited:
    """What the earlier release left: its unfinished jobs, their transcripts, its pending outbox results."""

    jobs: list[Job] = field(default_factory=list)
    transcripts: dict[str, Transcript] = field(default_factory=dict)
    # (job after, kind, payload: a Transcript, or a translation's dict)
    results: list[tuple[Job, str, Any]] = field(default_factory=list)


def read_snowflake(session: Session, inherited: Inherited) -> None:
    """Unfinished jobs and the transcripts of those that have one."""
    from snowflake.snowpark.functions import col

    rows = session.table(JOBS.name).filter(col("STATUS").isin(*(s.value for s in UNFINISHED))).collect()
    inherited.jobs = [job_from_row(r) for r in rows]
    need = [j.id for j in inherited.jobs if j.status in (JobStatus.TRANSCRIBED, JobStatus.TRANSLATING)]
    if need:
        found = session.table(TRANSCRIPTIONS.name).filter(col("JOB_ID").isin(need)).collect()
        inherited.transcripts = {r["JOB_ID"]: Transcript.load(from_row(TRANSCRIPTIONS, r)["body"]) for r in found}


def read_old_outbox(data_dir: Path, inherited: Inherited) -> None:
    path = data_dir / OLD_OUTBOX
    if not path.is_file():
        return
    conn = sqlite3.connect(path)
    try:
        for job, changes, kind, payload in conn.execute("SELECT job, changes, kind, payload FROM outbox"):
            after = job_from_record({**json.loads(job), **json.loads(changes)})
            result = json.loads(payload)
            inherited.results.append((after, kind, Transcript.load(result) if kind == "transcript" else result))
    finally:
        conn.close()


def take_in(store: SnowflakeStore, conn: sqlite3.Connection, inherited: Inherited) -> int:
    """Insert what is not in the local queue yet (one transaction); returns how many jobs were taken in."""
    present = {r[0] for r in conn.execute("SELECT id FROM jobs")}
    taken = 0
    latest: dict[str, Job] = {}  # a job's transcript, then its translation: the last one is its state
    for job, _kind, _ in sorted(inherited.results, key=lambda r: r[1] != "transcript"):
        latest[job.id] = job
    for job in latest.values():
        if job.id not in present:
            store._insert_job(conn, job)
            present.add(job.id)
            store._changed(conn, "job", [job.id])
            taken += 1
    for job, kind, payload in inherited.results:
        if job.id in latest:
            (store._put_transcript if kind == "transcript" else store._put_translation)(conn, job.id, payload)
    for job in inherited.jobs:
        if job.id in present:
            continue
        status = RESTART.get(job.status, job.status)
        transcript = inherited.transcripts.get(job.id)
        if status == JobStatus.TRANSCRIBED and transcript is None:
            status = JobStatus.QUEUED  # its transcript is not there: transcribe it again
        store._insert_job(conn, replace(job, status=status))
        if transcript is not None and status == JobStatus.TRANSCRIBED:
            store._put_transcript(conn, job.id, transcript)
        if status != job.status:
            store._changed(conn, "job", [job.id])
        taken += 1
    conn.execute("INSERT OR REPLACE INTO export_meta (key, value) VALUES ('adopted', datetime('now'))")
    return taken


def adopted(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM export_meta WHERE key = 'adopted'").fetchone() is not None


def retire_old_outbox(data_dir: Path) -> None:
    path = data_dir / OLD_OUTBOX
    if path.exists():
        path.rename(path.with_name(OLD_OUTBOX + ".adopted"))
        for suffix in ("-wal", "-shm"):
            path.with_name(OLD_OUTBOX + suffix).unlink(missing_ok=True)
