"""The Snowflake store against Snowpark local testing: Snowflake's own emulator (`local_testing=True`), which
runs the store's DataFrame/Table statements (create_dataframe, save_as_table, update, merge, delete) in
memory. No account and no network. The same behaviours tests/unit/test_jobs_store.py checks for SQLite, plus
batches, translations and VARIANT round trips; the outage cases are in test_outbox.py."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from service.jobs.model import Batch, InvalidTransition, Job, JobStatus, new_batch_id, new_job_id, now
from service.storage.base import DuplicateIdempotencyKey
from service.storage.snowflake_ops import DDL_PATH, ddl_statements
from service.storage.snowflake_schema import JOBS, TABLES, TRANSCRIPTIONS, TRANSLATIONS, VIEWS
from tests.snowflake.outage import (
    HINDI,
    FlakySessions,
    add_job,
    open_store,
    rows_in,
    run,
    transcript_of,
)

# -- the schema in Python matches sql/01_tables.sql ---------------------------------------------------------


def test_columns_match_the_ddl() -> None:
    created = {}
    for statement in sqlglot.parse(DDL_PATH.read_text(), read="snowflake"):
        if isinstance(statement, exp.Create):
            created[(statement.kind, statement.this.this.name)] = statement.this.expressions
    for spec in TABLES:
        columns = created[("TABLE", spec.name)]
        declared = [(c.name, c.args["kind"]) for c in columns if isinstance(c, exp.ColumnDef)]
        expected = [(c.name, exp.DataType.build(c.sql, dialect="snowflake")) for c in spec.columns]
        assert declared == expected, spec.name
    for view, names in VIEWS.items():
        assert tuple(e.name for e in created[("VIEW", view)]) == names


def test_ddl_splits_into_statements() -> None:
    statements = ddl_statements()
    creates = [s for s in statements if s.startswith("CREATE")]
    assert len(creates) == len(TABLES) + len(VIEWS)
    # the rest add columns to tables an older release created
    assert all(s.startswith("ALTER TABLE") and "ADD COLUMN IF NOT EXISTS" in s for s in statements if s not in creates)
    assert all(sqlglot.parse_one(s, read="snowflake") is not None for s in statements)
    assert statements[0].startswith("CREATE TABLE IF NOT EXISTS TRANSCRIPTION_JOBS")


# -- the behaviours tests/unit/test_jobs_store.py checks for SQLite ------------------------------------------


def test_add_moves_audio_and_persists(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store, model="base", prompt="Hindi news", temperature=0.2, word_timestamps=True)
        assert store.audio_path(job.id).read_bytes() == b"audio"
        await store.close()
        reopened = await open_store(tmp_path, sessions)  # tables exist: open() leaves them as they are
        again = await reopened.get(job.id)
        assert again == job  # every field round-trips, timestamps included
        assert again.submitted_at.tzinfo is not None
        assert await reopened.get("job_missing") is None
        await reopened.close()

    run(go())


def test_idempotency_key_is_unique(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        first = await add_job(store, key="k1")
        with pytest.raises(DuplicateIdempotencyKey) as dup:
            await add_job(store, key="k1")
        assert dup.value.job.id == first.id
        assert len(list(store.blob_dir.glob(".incoming-*"))) == 1  # the refused upload stays with the caller
        assert (await store.find_by_idempotency_key("k1")).id == first.id
        assert await store.find_by_idempotency_key("k2") is None
        await add_job(store)  # jobs without a key never collide
        await add_job(store)
        assert await store.count_active() == 3
        await store.close()

    run(go())


def test_claim_finish_and_fencing(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        a = await add_job(store)
        b = await add_job(store)
        claimed = await store.claim_next()
        assert claimed is not None and claimed.id == a.id and claimed.attempts == 1
        assert claimed.status == JobStatus.RUNNING and claimed.started_at is not None
        assert claimed == await store.get(a.id)
        await store.set_progress(claimed, 0.5)
        assert (await store.get(a.id)).progress == 0.5
        assert await store.save_transcript(claimed, {"text": "hi", "language": "en", "duration": 1.0, "segments": []})
        # A stale copy (same job, older status) can no longer change it: exactly one result per job.
        assert not await store.save_transcript(claimed, {"text": "again", "segments": []})
        await store.set_progress(claimed, 0.9)  # ignored: the job moved on
        assert (await store.transcript(a.id))["text"] == "hi"
        done = await store.get(a.id)
        assert done.status == JobStatus.SUCCEEDED and done.finished_at is not None and done.language == "en"
        assert done.audio_seconds == 1.0 and done.progress == 0.5
        assert len(rows_in(sessions, TRANSCRIPTIONS.name, a.id)) == 1
        second = await store.claim_next()
        assert second.id == b.id
        assert await store.claim_next() is None
        assert await store.count_by_status() == {"succeeded": 1, "running": 1}
        await store.close()

    run(go())


def test_transition_refusals(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store)
        with pytest.raises(InvalidTransition):
            await store.transition(job, JobStatus.SUCCEEDED)  # queued -> succeeded is not a move
        claimed = await store.claim_next()
        assert not await store.transition(job, JobStatus.CANCELLED)  # stale: the job is running now
        stale_attempt = Job(**{**claimed.__dict__, "attempts": 7})
        assert not await store.transition(stale_attempt, JobStatus.FAILED, error_code="x")
        assert await store.transition(claimed, JobStatus.FAILED, error_code="bad_audio", error_message="no sound")
        failed = await store.get(job.id)
        assert (failed.status, failed.error_code, failed.error_message) == (JobStatus.FAILED, "bad_audio", "no sound")
        assert failed.finished_at is not None
        await store.close()

    run(go())


def test_retry_backoff_and_recovery(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        await add_job(store)
        job = await store.claim_next()
        assert await store.transition(job, JobStatus.QUEUED, not_before=now() + timedelta(hours=1))
        assert await store.claim_next() is None  # not due yet
        other = await add_job(store)
        running = await store.claim_next()
        assert running.id == other.id
        assert await store.requeue_running() == 1  # what a restart does
        assert (await store.get(other.id)).status == JobStatus.QUEUED
        again = await store.claim_next()
        assert again.id == other.id and again.attempts == 2 and again.not_before is None
        await store.close()

    run(go())


def test_list_pages_newest_first(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        ids = [(await add_job(store)).id for _ in range(5)]
        page1 = await store.list(None, 3, None)
        assert [j.id for j in page1] == ids[::-1][:3]
        last = page1[-1]
        page2 = await store.list(None, 3, (last.submitted_at.isoformat(), last.id))
        assert [j.id for j in page2] == ids[::-1][3:]
        assert await store.list(JobStatus.SUCCEEDED, 10, None) == []
        assert [j.id for j in await store.list(JobStatus.QUEUED, 10, None)] == ids[::-1]
        await store.delete(ids[0])
        assert await store.get(ids[0]) is None and not store.audio_path(ids[0]).exists()
        await store.close()

    run(go())


def test_translation_and_recovery_of_translating_jobs(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store, translate_to="en")
        claimed = await store.claim_next()
        assert await store.save_transcript(claimed, transcript_of(HINDI, "hi"), JobStatus.TRANSCRIBED)
        transcribed = await store.get(job.id)
        assert transcribed.status == JobStatus.TRANSCRIBED and transcribed.finished_at is None
        assert await store.transition(transcribed, JobStatus.TRANSLATING)
        assert await store.requeue_running() == 1  # a restart mid-translation: back to transcribed
        transcribed = await store.get(job.id)
        assert transcribed.status == JobStatus.TRANSCRIBED
        assert await store.transition(transcribed, JobStatus.TRANSLATING)
        translating = await store.get(job.id)
        translation = {"text": "Hello", "source_language": "hi", "target_language": "en", "method": "cortex.translate"}
        assert await store.save_translation(translating, {**translation, "extra": 1})
        assert not await store.save_translation(translating, translation)  # stale
        assert await store.translation(job.id) == translation
        assert (await store.get(job.id)).status == JobStatus.SUCCEEDED
        assert await store.translation(new_job_id()) is None
        await store.delete(job.id)
        assert (
            rows_in(sessions, TRANSLATIONS.name, job.id) == [] and rows_in(sessions, TRANSCRIPTIONS.name, job.id) == []
        )
        await store.close()

    run(go())


def test_batch(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        batch = Batch(id=new_batch_id(), stage="@AUDIO_FILES_STAGE/हिंदी", pattern="*.mp4", files=3)
        batch.options = {"language": "hi", "translate_to": "en", "note": HINDI}
        start = now()
        jobs = [
            Job(
                id=new_job_id(),
                source=f"@AUDIO_FILES_STAGE/हिंदी/{i}.mp4",
                source_kind="stage",
                batch_id=batch.id,
                submitted_at=start + timedelta(microseconds=i),
            )
            for i in range(3)
        ]
        await store.add_batch(batch, jobs)
        assert await store.get_batch(batch.id) == batch
        assert await store.get_batch("batch_missing") is None
        assert [j.id for j in await store.batch_jobs(batch.id)] == [j.id for j in jobs]
        assert (await store.get(jobs[0].id)).source_kind == "stage"
        assert await store.batch_jobs("batch_missing") == []
        await store.close()

    run(go())


def test_variant_round_trip_with_hindi(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store)
        claimed = await store.claim_next()
        transcript = {
            "text": HINDI,
            "language": "hi",
            "duration": 3.25,
            "segments": [{"start": 0.0, "end": 3.25, "text": HINDI, "words": [{"word": "नमस्ते", "p": 0.9}]}],
            "timings": {"wall_s": 1.5, "decode_s": 0.25},
            "nested": {"list": [1, "दो", None, True]},
        }
        assert await store.save_transcript(claimed, transcript)
        assert await store.transcript(job.id) == transcript
        done = await store.get(job.id)
        assert done.timings == transcript["timings"]
        (row,) = rows_in(sessions, TRANSCRIPTIONS.name, job.id)
        assert row["TEXT"] == HINDI and row["LANGUAGE"] == "hi" and row["SOURCE"] == "a.wav"
        assert json.loads(row["SEGMENTS"]) == transcript["segments"]
        (job_row,) = rows_in(sessions, JOBS.name, job.id)
        assert json.loads(job_row["TIMINGS"]) == transcript["timings"]
        await store.close()

    run(go())


INJECTIONS = [
    "x'); DROP TABLE TRANSCRIPTION_JOBS; --",
    "' OR '1'='1",
    "\\'; DELETE FROM TRANSCRIPTIONS WHERE '' = '",
    '"; SELECT SYSTEM$WHITELIST(); --',
    "$$ || CURRENT_USER() || $$",
]


@pytest.mark.parametrize("nasty", INJECTIONS)
def test_values_are_data_never_sql(tmp_path: Path, sessions: FlakySessions, nasty: str) -> None:
    """Hostile strings in every text field come back unchanged and match only themselves."""

    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        other = await add_job(store, key="plain", owner="BOB")
        job = await add_job(store, key=nasty, owner=nasty, prompt=nasty)
        stored = await store.get(job.id)
        assert stored is not None and (stored.idempotency_key, stored.owner, stored.prompt) == (nasty, nasty, nasty)
        assert (await store.find_by_idempotency_key(nasty)).id == job.id
        assert [j.id for j in await store.list(None, 10, None, owner=nasty)] == [job.id]
        assert await store.count_active(nasty) == 1
        assert await store.get(other.id) is not None  # nothing else was touched
        await store.close()

    run(go())
