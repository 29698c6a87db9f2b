"""The outbox: results that could not reach Snowflake are kept locally, shown by reads, and written exactly once
when Snowflake is back (or by the next process). Snowpark local testing (Snowflake's own emulator) behind the
switchable outage of outage.py; no network."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.jobs.model import JobStatus
from service.storage.outbox import is_session_gone, is_unreachable
from service.storage.snowflake_schema import JOBS, TRANSCRIPTIONS, TRANSLATIONS
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


def test_results_survive_an_outage(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        a, b, c = await add_job(store), await add_job(store, translate_to="en"), await add_job(store, translate_to="en")
        ja, jb, jc = await store.claim_next(), await store.claim_next(), await store.claim_next()
        assert await store.save_transcript(jc, transcript_of(HINDI, "hi"), JobStatus.TRANSCRIBED)
        jc = await store.get(c.id)
        assert await store.transition(jc, JobStatus.TRANSLATING)
        jc = await store.get(c.id)

        sessions.down = True
        assert await store.save_transcript(ja, transcript_of("one"))
        assert await store.save_transcript(jb, transcript_of(HINDI, "hi"), JobStatus.TRANSCRIBED)
        translation = {"text": "Hello", "source_language": "hi", "target_language": "en", "method": "cortex.translate"}
        assert await store.save_translation(jc, translation)
        await store.set_progress(ja, 0.7)  # advisory: no error while Snowflake is away
        # Reads show the results while Snowflake is still unreachable.
        assert (await store.get(a.id)).status == JobStatus.SUCCEEDED
        assert (await store.get(b.id)).status == JobStatus.TRANSCRIBED
        assert (await store.get(c.id)).status == JobStatus.SUCCEEDED
        assert (await store.transcript(a.id))["text"] == "one"
        assert await store.translation(c.id) == translation
        assert not await store.save_transcript(ja, transcript_of("stale"))  # the job moved on, even offline
        with pytest.raises(ConnectionError):
            await store.list(None, 10, None)  # what needs Snowflake still says so
        with pytest.raises(ConnectionError):
            await store.ping()
        await asyncio.sleep(0.2)  # the flusher tries and fails meanwhile
        assert await store._local(store.outbox.job_ids) == {a.id, b.id, c.id}

        sessions.down = False
        await eventually(lambda: store._local(lambda: not store.outbox.job_ids()))
        for job, status in ((a, "succeeded"), (b, "transcribed"), (c, "succeeded")):
            (row,) = rows_in(sessions, JOBS.name, job.id)
            assert row["STATUS"] == status
            assert len(rows_in(sessions, TRANSCRIPTIONS.name, job.id)) == 1  # exactly once
        assert len(rows_in(sessions, TRANSLATIONS.name, c.id)) == 1
        assert (await store.transcript(b.id))["text"] == HINDI
        assert await store.translation(c.id) == translation
        assert (await store.get(a.id)).finished_at is not None
        await store.ping()
        # b goes on to its translation as usual once Snowflake is back.
        jb = await store.get(b.id)
        assert await store.transition(jb, JobStatus.TRANSLATING)
        assert await store.requeue_running() == 1 and await store.claim_next() is None
        await store.close()

    run(go())


def test_half_written_result_is_completed_once(tmp_path: Path, sessions: FlakySessions) -> None:
    """Snowflake goes away between the job update and the result MERGE: the MERGE is replayed, once."""

    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store)
        claimed = await store.claim_next()
        sessions.budget = 1  # the job update gets through, then the outage starts
        assert await store.save_transcript(claimed, transcript_of("half"))
        (entry,) = await store._local(store.outbox.entries)
        assert entry.applied
        assert rows_in(sessions, JOBS.name, job.id)[0]["STATUS"] == "succeeded"
        assert rows_in(sessions, TRANSCRIPTIONS.name, job.id) == []
        assert (await store.transcript(job.id))["text"] == "half"
        sessions.down = False
        await eventually(lambda: store._local(lambda: not store.outbox.job_ids()))
        assert [r["TEXT"] for r in rows_in(sessions, TRANSCRIPTIONS.name, job.id)] == ["half"]
        await store.close()

    run(go())


def test_pending_results_are_never_run_again(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions, outbox_retry_s=3600)  # flushed by hand below
        job = await add_job(store)
        claimed = await store.claim_next()
        sessions.down = True
        assert await store.save_transcript(claimed, transcript_of("kept"))
        sessions.down = False
        # Snowflake is back but the entry is not flushed yet: Snowflake still says running.
        assert rows_in(sessions, JOBS.name, job.id)[0]["STATUS"] == "running"
        assert await store.count_by_status() == {"succeeded": 1}
        assert await store.count_active() == 0
        assert await store.requeue_running() == 0  # a restart does not requeue it
        assert rows_in(sessions, JOBS.name, job.id)[0]["STATUS"] == "running"
        # Even when another process requeued it, this one does not claim it.
        sessions.session.table(JOBS.name).update({"STATUS": "queued"})
        assert await store.claim_next() is None
        assert [j.status for j in await store.list(None, 10, None)] == [JobStatus.SUCCEEDED]
        assert [j.id for j in await store.list(JobStatus.SUCCEEDED, 10, None)] == [job.id]
        assert await store.list(JobStatus.QUEUED, 10, None) == []
        assert await store.flush() == 0  # the stored result wins over the requeue
        assert rows_in(sessions, JOBS.name, job.id)[0]["STATUS"] == "succeeded"
        assert len(rows_in(sessions, TRANSCRIPTIONS.name, job.id)) == 1
        await store.close()

    run(go())


def test_outbox_is_flushed_by_the_next_process(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        jobs = [await add_job(store) for _ in range(3)]
        claimed = [await store.claim_next() for _ in jobs]
        sessions.down = True
        for job in claimed:
            assert await store.save_transcript(job, transcript_of(f"text of {job.id}"))
        await store.close()  # the last flush fails too: the entries stay on disk
        assert (tmp_path / "outbox.sqlite3").exists()

        sessions.down = False
        restarted = await open_store(tmp_path, sessions, outbox_retry_s=3600)  # open() flushes
        assert await restarted._local(restarted.outbox.job_ids) == set()
        for job in jobs:
            assert rows_in(sessions, JOBS.name, job.id)[0]["STATUS"] == "succeeded"
            assert [r["TEXT"] for r in rows_in(sessions, TRANSCRIPTIONS.name, job.id)] == [f"text of {job.id}"]
        assert await restarted.requeue_running() == 0
        await restarted.close()

    run(go())


def test_programming_errors_are_not_hidden(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        await add_job(store)
        claimed = await store.claim_next()
        with pytest.raises(TypeError):  # not JSON-serialisable: a bug, not an outage
            await store.save_transcript(claimed, {"text": "x", "segments": [object()]})
        assert await store._local(store.outbox.job_ids) == set()
        assert (await store.get(claimed.id)).status == JobStatus.RUNNING  # nothing was written
        await store.close()

    run(go())


def _sql_error(errno: int) -> Exception:
    from snowflake.connector.errors import ProgrammingError
    from snowflake.snowpark.exceptions import SnowparkSQLException

    return SnowparkSQLException("failed", conn_error=ProgrammingError("failed", errno=errno))


def test_which_errors_mean_unreachable() -> None:
    from snowflake.connector.errors import OperationalError
    from snowflake.snowpark.exceptions import SnowparkSessionException

    assert is_unreachable(ConnectionError("reset")) and is_unreachable(TimeoutError())
    assert is_unreachable(OperationalError("network")) and is_unreachable(SnowparkSessionException("closed"))
    assert is_unreachable(_sql_error(390114)) and is_session_gone(_sql_error(390114))
    assert not is_unreachable(_sql_error(1003))  # SQL compilation error: ours
    assert not is_unreachable(TypeError("bug")) and not is_unreachable(KeyError("bug"))
    assert not is_session_gone(ConnectionError("reset"))
