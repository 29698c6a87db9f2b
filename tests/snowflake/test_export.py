"""The export to Snowflake under failure: an outage, a flush cut short between two tables, a flush whose
reply was lost, a process killed with SIGKILL. In every case each job ends up in the tables exactly once, in
its final state, and the local queue never stops. Snowflake is EMULATED by Snowpark local testing behind the
switchable outage of outage.py; no network."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from snowflake.snowpark.exceptions import SnowparkSessionException
from snowflake.snowpark.functions import lit

from service.jobs.model import Job, JobStatus, new_job_id, now
from service.options import JobOptions
from service.storage import snowflake_export
from service.storage.records import job_to_record
from service.storage.snowflake_schema import JOBS, TRANSCRIPTIONS, TRANSLATIONS, job_values, transcript_values
from service.storage.snowflake_session import is_session_gone
from service.storage.snowflake_tables import create_tables
from service.transcript import Transcript
from tests.snowflake.outage import (
    HINDI,
    FlakySessions,
    add_job,
    eventually,
    open_store,
    rows_in,
    run,
    transcript_of,
)

TRANSLATION = {"text": "Hello", "source_language": "hi", "target_language": "en", "method": "cortex.translate"}


def _exactly_once(sessions: FlakySessions, job_id: str, status: str, text: str | None = None) -> None:
    (row,) = rows_in(sessions, JOBS.name, job_id)
    assert row["STATUS"] == status, row
    if text is not None:
        assert [r["TEXT"] for r in rows_in(sessions, TRANSCRIPTIONS.name, job_id)] == [text]


def test_the_queue_runs_through_an_outage_and_the_tables_catch_up(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        sessions.down = True  # from the start: Snowflake never answered this process before it came back
        a, b, c = await add_job(store), await add_job(store, translate_to="en"), await add_job(store)
        ja, jb = await store.claim_next(), await store.claim_next()
        assert await store.save_transcript(ja, transcript_of("one"))
        assert await store.save_transcript(jb, transcript_of(HINDI, "hi"), JobStatus.TRANSCRIBED)
        jb = await store.get(b.id)
        assert await store.transition(jb, JobStatus.TRANSLATING)
        assert await store.save_translation(await store.get(b.id), TRANSLATION)
        await store.set_progress(await store.claim_next(), 0.5)
        # Every read and write is local: nothing waits for Snowflake, nothing answers 503.
        assert [j.status for j in await store.list(None, 10, None)] == [
            JobStatus.RUNNING,
            JobStatus.SUCCEEDED,
            JobStatus.SUCCEEDED,
        ]
        assert await store.count_by_status() == {"running": 1, "succeeded": 2}
        await store.ping()
        await asyncio.sleep(0.3)  # the exporter tries, fails and backs off meanwhile
        status = store.export_status()
        assert status.failures >= 1 and status.pending >= 5 and "unreachable" in (status.last_error or "")
        assert rows_in(sessions, JOBS.name, a.id) == []

        sessions.down = False
        await eventually(lambda: _drained(store))
        _exactly_once(sessions, a.id, "succeeded", "one")
        _exactly_once(sessions, b.id, "succeeded", HINDI)
        _exactly_once(sessions, c.id, "running")
        assert len(rows_in(sessions, TRANSLATIONS.name, b.id)) == 1
        assert await store.flush() == 0 and store.export_status().failures == 0
        await store.close()

    run(go())


async def _drained(store: Any) -> bool:
    return await store.exporter.pending() == 0


def test_a_flush_cut_short_between_tables_is_finished_once(tmp_path: Path, sessions: FlakySessions) -> None:
    """The transcripts MERGE gets through, then Snowflake goes away before the jobs MERGE."""

    async def go() -> None:
        store = await open_store(tmp_path, sessions, export_interval_s=3600)  # flushed by hand
        assert await store.flush() == 0  # the first flush also looks for an earlier release's jobs
        jobs = [await add_job(store) for _ in range(3)]
        for job in jobs:
            assert await store.save_transcript(await store.claim_next(), transcript_of(f"text of {job.id}"))
        sessions.budget = 2  # the transcripts MERGE (two session calls), then the outage
        with pytest.raises(SnowparkSessionException):
            await store.flush()
        assert all(len(rows_in(sessions, TRANSCRIPTIONS.name, j.id)) == 1 for j in jobs)
        assert all(rows_in(sessions, JOBS.name, j.id) == [] for j in jobs)
        assert await store.exporter.pending() == 3  # the job rows, not the transcripts
        sessions.down = False
        assert await store.flush() == 0
        for job in jobs:
            _exactly_once(sessions, job.id, "succeeded", f"text of {job.id}")
        await store.close()

    run(go())


def test_a_flush_whose_reply_was_lost_writes_the_rows_once(tmp_path: Path, sessions: FlakySessions) -> None:
    """Snowflake ran every MERGE but the answers never came back (the marks were not cleared): the next
    flush, here by the next process, MERGEs the same rows again and still leaves one row per job."""

    async def go() -> None:
        store = await open_store(tmp_path, sessions, export_interval_s=3600)
        job = await add_job(store, translate_to="en")
        assert await store.save_transcript(await store.claim_next(), transcript_of(HINDI, "hi"), JobStatus.TRANSCRIBED)
        assert await store.transition(await store.get(job.id), JobStatus.TRANSLATING)
        assert await store.save_translation(await store.get(job.id), TRANSLATION)

        real_clear = snowflake_export._clear

        def reply_lost(*_: Any) -> None:
            raise ConnectionError("the connection dropped before Snowflake's answer arrived (simulated)")

        snowflake_export._clear = reply_lost  # type: ignore[assignment]
        try:
            for _ in range(2):  # twice: the transcript MERGE lands, its reply does not, and it is sent again
                with pytest.raises(ConnectionError):
                    await store.flush()
                assert [r["TEXT"] for r in rows_in(sessions, TRANSCRIPTIONS.name, job.id)] == [HINDI]
        finally:
            snowflake_export._clear = real_clear  # type: ignore[assignment]
        await store.close()

        again = await open_store(tmp_path, sessions)
        await eventually(lambda: _drained(again))
        _exactly_once(sessions, job.id, "succeeded", HINDI)
        for table in (JOBS, TRANSCRIPTIONS, TRANSLATIONS):
            assert len(rows_in(sessions, table.name, job.id)) == 1, table.name
        await again.close()

    run(go())


CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
from tests.snowflake.outage import FlakySessions, add_job, open_store, transcript_of

async def main(folder: Path) -> None:
    sessions = FlakySessions()
    store = await open_store(folder, sessions, export_interval_s=3600)  # nothing leaves this process
    jobs = [await add_job(store) for _ in range(6)]
    for job in jobs[:4]:
        claimed = await store.claim_next()
        if job is not jobs[3]:
            assert await store.save_transcript(claimed, transcript_of("text of " + claimed.id))
    print(" ".join(j.id for j in jobs), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main(Path(sys.argv[1])))
"""


def test_sigkill_before_any_export_loses_nothing(tmp_path: Path, sessions: FlakySessions) -> None:
    """A gateway killed with jobs queued, running and finished: the next process exports every change."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    ids = child.stdout.split()
    assert len(ids) == 6

    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        assert await store.requeue_running() == 1  # what the dispatcher does at start
        await eventually(lambda: _drained(store))
        for job_id in ids[:3]:
            _exactly_once(sessions, job_id, "succeeded", f"text of {job_id}")
        for job_id in ids[3:]:
            _exactly_once(sessions, job_id, "queued")
        assert rows_in(sessions, TRANSCRIPTIONS.name, ids[3]) == []
        await store.close()

    run(go())


def test_programming_errors_are_not_hidden(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        await add_job(store)
        claimed = await store.claim_next()
        with pytest.raises(TypeError):  # not JSON: a bug, refused before anything is written
            await store.save_transcript(claimed, Transcript.load({"text": "x", "extra": object()}))
        assert (await store.get(claimed.id)).status == JobStatus.RUNNING  # nothing was written
        await store.close()

    run(go())


def _sql_error(errno: int) -> Exception:
    from snowflake.connector.errors import ProgrammingError
    from snowflake.snowpark.exceptions import SnowparkSQLException

    return SnowparkSQLException("failed", conn_error=ProgrammingError("failed", errno=errno))


def test_which_errors_mean_a_new_session() -> None:
    assert is_session_gone(_sql_error(390114)) and is_session_gone(SnowparkSessionException("closed"))
    assert not is_session_gone(ConnectionError("reset")) and not is_session_gone(_sql_error(1003))


OLD_OUTBOX_SCHEMA = """CREATE TABLE outbox (job_id TEXT NOT NULL, kind TEXT NOT NULL, job TEXT NOT NULL,
    changes TEXT NOT NULL, payload TEXT NOT NULL, applied INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, kind))"""


def test_an_upgrade_takes_in_the_earlier_releases_unfinished_jobs(tmp_path: Path, sessions: FlakySessions) -> None:
    """The release before kept its queue in TRANSCRIPTION_JOBS and its unsent results in outbox.sqlite3: the
    first start of this one takes them into the local queue, once."""

    session = sessions.session
    create_tables(session)

    def stage_job(status: JobStatus, **kw: Any) -> Job:
        return Job(id=new_job_id(), source="@AUDIO/a.mp3", source_kind="stage", status=status, **kw)

    queued, running = stage_job(JobStatus.QUEUED), stage_job(JobStatus.RUNNING, attempts=1)
    transcribed = stage_job(JobStatus.TRANSCRIBED, attempts=1, options=JobOptions(translate_to="en"))
    lost = stage_job(JobStatus.TRANSLATING, attempts=1, options=JobOptions(translate_to="en"))  # no transcript row
    done, pending = stage_job(JobStatus.SUCCEEDED, attempts=1), stage_job(JobStatus.RUNNING, attempts=1)
    old = [queued, running, transcribed, lost, done, pending]
    session.create_dataframe([job_values(j) for j in old], schema=JOBS.struct()).write.save_as_table(
        JOBS.name, mode="append"
    )
    session.create_dataframe(
        [transcript_values(transcribed, transcript_of(HINDI, "hi"), now())], schema=TRANSCRIPTIONS.struct()
    ).write.save_as_table(TRANSCRIPTIONS.name, mode="append")
    outbox = sqlite3.connect(tmp_path / "outbox.sqlite3")
    changes = {"status": "succeeded", "finished_at": now().isoformat()}
    row = (pending.id, "transcript", json.dumps(job_to_record(pending)), json.dumps(changes))
    outbox.execute(OLD_OUTBOX_SCHEMA)
    outbox.execute(
        "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, 0, ?)", (*row, json.dumps(transcript_of("kept").dump()), "x")
    )
    outbox.commit()
    outbox.close()

    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        statuses = {j.id: (await store.get(j.id)).status if await store.get(j.id) else None for j in old}
        assert statuses == {
            queued.id: JobStatus.QUEUED,
            running.id: JobStatus.QUEUED,
            transcribed.id: JobStatus.TRANSCRIBED,
            lost.id: JobStatus.QUEUED,
            done.id: None,  # finished before the upgrade: its record is the Snowflake tables
            pending.id: JobStatus.SUCCEEDED,
        }
        assert (await store.transcript(transcribed.id)).text == HINDI
        assert (await store.transcript(pending.id)).text == "kept"
        assert not (tmp_path / "outbox.sqlite3").exists() and (tmp_path / "outbox.sqlite3.adopted").exists()
        assert await store.flush() == 0
        _exactly_once(sessions, running.id, "queued")
        _exactly_once(sessions, pending.id, "succeeded", "kept")
        _exactly_once(sessions, done.id, "succeeded")
        await store.close()
        session.table(JOBS.name).update({"STATUS": lit("queued")})  # whatever Snowflake says now...
        again = await open_store(tmp_path, sessions)
        assert (await again.get(pending.id)).status == JobStatus.SUCCEEDED  # ...is not taken in twice
        assert await again.get(done.id) is None
        await again.close()

    run(go())
