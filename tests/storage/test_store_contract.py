"""The JobStore contract every store must keep, run against each (the `stores` fixture): SQLite (a real file,
real fsync and rename) and the Snowflake store on Snowpark local testing (Snowflake's own emulator). What only
one store has (SQL schema, VARIANT columns, rows as Snowflake holds them, the export, latency) is tested beside
its store, in tests/snowflake/."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.jobs.model import Batch, InvalidTransition, Job, JobStatus, new_batch_id, new_job_id, now
from service.options import JobOptions
from service.storage.base import Bounds, DuplicateIdempotencyKey, QueueFull
from service.transcript import Transcript
from tests.storage.conftest import Stores
from tests.storage.helpers import HINDI, add_job, job_of, transcript_of

SPOKEN = Transcript.load({"text": "hi", "language": "en", "duration": 1.0, "segments": []})


async def _upload(store: Any, owner: str | None = None, bounds: Bounds | None = None) -> tuple[Job, Path]:
    incoming = store.incoming_path(new_job_id())
    incoming.write_bytes(b"audio")
    job = Job(id=new_job_id(), source="a.wav", bytes=5, owner=owner)
    return await store.add(job, incoming, bounds), incoming


def test_add_moves_audio_and_persists(stores: Stores, tmp_path: Path) -> None:
    job = job_of(bytes=5, model="base", prompt="Hindi news", temperature=0.2, word_timestamps=True, owner="ALICE")

    async def test(store: Any) -> None:
        incoming = store.incoming_path("upload")
        incoming.write_bytes(b"audio")
        await store.add(job, incoming)
        assert store.audio_path(job.id).read_bytes() == b"audio" and not incoming.exists()

    async def reopened(store: Any) -> None:  # a new process sees the committed job, every field of it
        again = await store.get(job.id)
        assert again == job and again.status == JobStatus.QUEUED and again.submitted_at.tzinfo is not None
        assert await store.get("job_missing") is None

    stores.run(test)
    stores.run(reopened)


def test_idempotency_key_is_unique_per_owner(stores: Stores, tmp_path: Path) -> None:
    """A key names one job of its owner; other owners (and jobs without one) have keys of their own."""

    async def test(store: Any) -> None:
        first = await add_job(store, key="k1", owner="ALICE")
        with pytest.raises(DuplicateIdempotencyKey) as dup:
            await add_job(store, key="k1", owner="ALICE")
        assert dup.value.job.id == first.id
        assert len(list(store.blob_dir.glob(".incoming-*"))) == 1  # the refused upload stays with the caller
        assert (await store.find_by_idempotency_key("k1", "ALICE")).id == first.id
        assert await store.find_by_idempotency_key("k2", "ALICE") is None
        # Another owner's key: not found (no oracle), and free for them (no squatting).
        assert await store.find_by_idempotency_key("k1", "BOB") is None
        assert await store.find_by_idempotency_key("k1", None) is None
        bobs = await add_job(store, key="k1", owner="BOB")
        anonymous = await add_job(store, key="k1")
        assert len({first.id, bobs.id, anonymous.id}) == 3
        assert (await store.find_by_idempotency_key("k1", "BOB")).id == bobs.id
        assert (await store.find_by_idempotency_key("k1", None)).id == anonymous.id
        with pytest.raises(DuplicateIdempotencyKey) as dup:
            await add_job(store, key="k1")
        assert dup.value.job.id == anonymous.id
        await add_job(store)  # jobs without a key never collide
        await add_job(store)
        assert await store.count_active() == 5

    stores.run(test)


OLD_JOBS_TABLE = """CREATE TABLE jobs (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, language TEXT, task TEXT NOT NULL, word_timestamps INTEGER NOT NULL,
    model TEXT NOT NULL, status TEXT NOT NULL, submitted_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, not_before TEXT, error_code TEXT, error_message TEXT, audio_seconds REAL,
    bytes INTEGER NOT NULL, idempotency_key TEXT UNIQUE, timings TEXT NOT NULL DEFAULT '{}')"""


def test_a_database_with_global_idempotency_keys_is_rebuilt_per_owner(stores: Stores, tmp_path: Path) -> None:
    """A queue written before per-owner keys (the column was UNIQUE across owners): opened, its jobs and their
    transcripts are all there, and keys are per owner from then on."""
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as old:
        old.execute(OLD_JOBS_TABLE)
        old.execute(
            "CREATE TABLE transcripts (job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE, text TEXT"
            " NOT NULL, language TEXT, duration REAL, segments TEXT NOT NULL, body TEXT NOT NULL,"
            " created_at TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO jobs (id, source, task, word_timestamps, model, status, submitted_at, bytes, idempotency_key)"
            " VALUES ('job_old', 'a.wav', 'transcribe', 0, 'base', 'succeeded', '2026-01-01T00:00:00+00:00', 5, 'k1')"
        )
        old.execute("INSERT INTO transcripts VALUES ('job_old', 'hi', 'en', 1.0, '[]', '{\"text\": \"hi\"}', 'x')")

    async def test(store: Any) -> None:
        assert (await store.get("job_old")).status == JobStatus.SUCCEEDED
        assert (await store.transcript("job_old")).text == "hi"
        assert (await store.find_by_idempotency_key("k1", None)).id == "job_old"
        assert (await add_job(store, key="k1", owner="ALICE")).owner == "ALICE"  # no longer taken
        with pytest.raises(DuplicateIdempotencyKey):
            await add_job(store, key="k1")
        assert [j.id for j in await store.list(JobStatus.SUCCEEDED, 10, None)] == ["job_old"]

    stores.run(test)
    stores.run(_reopened)


async def _reopened(store: Any) -> None:
    """A second open finds the rebuilt table as it left it (nothing rebuilt twice, nothing lost)."""
    assert (await store.transcript("job_old")).text == "hi"
    assert (await store.find_by_idempotency_key("k1", "ALICE")) is not None


def test_claim_finish_and_fencing(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
        a = await add_job(store)
        b = await add_job(store)
        claimed = await store.claim_next()
        assert claimed is not None and claimed.id == a.id and claimed.attempts == 1
        assert claimed.status == JobStatus.RUNNING and claimed.started_at is not None
        assert claimed == await store.get(a.id)
        await store.set_progress(claimed, 0.5)
        assert (await store.get(a.id)).progress == 0.5
        assert await store.save_transcript(claimed, SPOKEN)
        # A stale copy (same job, older status) can no longer change it: exactly one result per job.
        assert not await store.save_transcript(claimed, Transcript(text="again"))
        await store.set_progress(claimed, 0.9)  # ignored: the job moved on
        assert (await store.transcript(a.id)).text == "hi"
        done = await store.get(a.id)
        assert done.status == JobStatus.SUCCEEDED and done.finished_at is not None and done.language == "en"
        assert done.audio_seconds == 1.0 and done.progress == 0.5
        second = await store.claim_next()
        assert second.id == b.id
        assert await store.claim_next() is None
        assert await store.count_by_status() == {"succeeded": 1, "running": 1}

    stores.run(test)


def test_transition_refusals(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
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

    stores.run(test)


def test_retry_backoff_and_recovery(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
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

    stores.run(test)


def test_list_pages_newest_first(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
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

    stores.run(test)


def test_translation_and_recovery_of_translating_jobs(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
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
        assert await store.save_translation(translating, translation)
        assert not await store.save_translation(translating, translation)  # fenced: already succeeded
        assert await store.translation(job.id) == translation
        assert (await store.get(job.id)).status == JobStatus.SUCCEEDED
        assert await store.translation(new_job_id()) is None
        await store.delete(job.id)
        assert await store.get(job.id) is None and await store.translation(job.id) is None

    stores.run(test)


def test_batch(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
        batch = Batch(id=new_batch_id(), stage="@AUDIO_FILES_STAGE/हिंदी", pattern="*.mp4", files=3)
        batch.options = JobOptions(language="hi", translate_to="en", prompt=HINDI)
        start = now()
        jobs = [
            Job(
                id=new_job_id(),
                source=f"@AUDIO_FILES_STAGE/हिंदी/{i}.mp4",
                source_kind="stage",
                batch_id=batch.id,
                submitted_at=start + timedelta(microseconds=i),
            )
            for i in (2, 0, 1)
        ]
        await store.add_batch(batch, jobs)
        assert await store.get_batch(batch.id) == batch
        assert await store.get_batch("batch_missing") is None
        in_order = [j.id for j in sorted(jobs, key=lambda j: j.submitted_at)]
        assert [j.id for j in await store.batch_jobs(batch.id)] == in_order  # by submission time
        assert (await store.get(jobs[0].id)).source_kind == "stage"
        assert not store.audio_path(jobs[0].id).exists()  # stage audio stays on its stage
        assert await store.batch_jobs("batch_missing") == []
        assert (await store.claim_next()).id == in_order[0]

    stores.run(test)


def test_the_bound_holds_and_a_refused_job_leaves_nothing(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
        limit = Bounds(max_active=3)
        for _ in range(3):
            await _upload(store, bounds=limit)
        incoming = store.incoming_path("refused")
        incoming.write_bytes(b"audio")
        job = Job(id=new_job_id(), source="a.wav", bytes=5)
        with pytest.raises(QueueFull) as refused:
            await store.add(job, incoming, limit)
        assert (refused.value.code, refused.value.active, refused.value.limit) == ("queue_full", 3, 3)
        assert await store.get(job.id) is None and not store.audio_path(job.id).exists()
        assert incoming.exists()  # still the caller's, to remove
        assert await store.count_active() == 3
        claimed = await store.claim_next()  # a finished job makes room
        assert await store.save_transcript(claimed, SPOKEN)
        await _upload(store, bounds=limit)

    stores.run(test)


def test_one_owner_is_bounded_while_others_go_on(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
        for _ in range(2):
            await _upload(store, "ALICE", Bounds(10, "ALICE", 2))
        with pytest.raises(QueueFull) as refused:
            await _upload(store, "ALICE", Bounds(10, "ALICE", 2))
        assert (refused.value.code, refused.value.owner, refused.value.active) == ("too_many_jobs", "ALICE", 2)
        await _upload(store, "BOB", Bounds(10, "BOB", 2))
        assert await store.count_active("ALICE") == 2 and await store.count_active() == 3

    stores.run(test)


def test_a_batch_that_would_pass_the_bound_stores_nothing(stores: Stores, tmp_path: Path) -> None:
    async def test(store: Any) -> None:
        await _upload(store)

        def batch_of(n: int) -> tuple[Batch, list[Job]]:
            batch = Batch(id=new_batch_id(), stage="@AUDIO_FILES_STAGE", pattern=".*", files=n)
            jobs = [Job(id=new_job_id(), source=f"@AUDIO_FILES_STAGE/{i}.mp4", source_kind="stage", batch_id=batch.id)
                    for i in range(n)]  # fmt: skip
            return batch, jobs

        refused, jobs = batch_of(3)
        with pytest.raises(QueueFull):
            await store.add_batch(refused, jobs, Bounds(max_active=3))
        assert await store.get_batch(refused.id) is None and await store.batch_jobs(refused.id) == []
        accepted, jobs = batch_of(2)
        await store.add_batch(accepted, jobs, Bounds(max_active=3))
        assert len(await store.batch_jobs(accepted.id)) == 2 and await store.count_active() == 3

    stores.run(test)


EVERY_OPTION = JobOptions(
    language="hi",
    task="translate",
    word_timestamps=True,
    prompt=HINDI,
    temperature=0.4,
    hotwords="Kenobi, नमस्ते",
    vad_filter=False,
    vad_threshold=0.3,
    vad_min_silence_ms=250,
    vad_speech_pad_ms=100,
    speakers="2-4",
    translate_to="fr",
)


def test_job_options_round_trip_unchanged(stores: Stores) -> None:
    """Every option, set to other than its default, comes back as it went in (a job's and a batch's)."""
    assert set(EVERY_OPTION.stored()) == set(JobOptions.model_fields)  # the test covers every option
    job = job_of(bytes=5, language="hi", options=EVERY_OPTION)
    plain = job_of(bytes=5)
    batch = Batch(id=new_batch_id(), stage="@AUDIO_FILES_STAGE", pattern=".*", options=EVERY_OPTION, files=1)
    staged = Job(id=new_job_id(), source="@AUDIO_FILES_STAGE/a.mp4", source_kind="stage", batch_id=batch.id,
                 options=EVERY_OPTION)  # fmt: skip

    async def add(store: Any) -> None:
        for each in (job, plain):
            incoming = store.incoming_path(each.id)
            incoming.write_bytes(b"audio")
            await store.add(each, incoming)
        await store.add_batch(batch, [staged])

    async def reopened(store: Any) -> None:
        assert (await store.get(job.id)).options == EVERY_OPTION
        assert (await store.get(plain.id)).options == JobOptions()
        assert (await store.get_batch(batch.id)).options == EVERY_OPTION
        assert (await store.get(staged.id)).options == EVERY_OPTION
        claimed = await store.claim_next()
        assert await store.save_transcript(claimed, transcript_of("bonjour", "fr"), JobStatus.TRANSCRIBED)
        done = await store.get(claimed.id)  # the detected language replaces the one asked for; the options stay
        assert (done.language, done.options) == ("fr", claimed.options)

    stores.run(add)
    stores.run(reopened)


def test_transcript_round_trips(stores: Stores) -> None:
    """A transcript with every field (words, timings, a field of a newer release) comes back equal; its length,
    timings and detected language are the job's."""
    transcript = Transcript.load(
        {
            "text": HINDI,
            "language": "hi",
            "language_probability": 0.97,
            "duration": 3.25,
            "speech_seconds": 3.0,
            "segments": [
                {
                    "start": 0.0,
                    "end": 3.25,
                    "text": " " + HINDI,
                    "tokens": [50364, 7, 8],
                    "seek": 0,
                    "temperature": 0.0,
                    "avg_logprob": -0.25,
                    "compression_ratio": 1.5,
                    "no_speech_prob": 0.01,
                    "words": [{"word": " नमस्ते,", "start": 0.0, "end": 0.5, "probability": 0.9}],
                },
                {"start": 3.25, "end": 3.25, "text": ""},
            ],
            "engine": "faster-whisper",
            "model": "large-v3",
            "timings": {"decode_s": 0.25, "whisper_nodes": ["n1"], "wall_s": 1.5},
            "nested": {"list": [1, "दो", True]},
        }
    )

    async def test(store: Any) -> None:
        job = await add_job(store)
        assert await store.save_transcript(await store.claim_next(), transcript)
        assert await store.transcript(job.id) == transcript
        assert await store.transcript(new_job_id()) is None
        done = await store.get(job.id)
        assert (done.audio_seconds, done.language) == (3.25, "hi")
        assert done.timings.model_dump(exclude_none=True) == {"decode_s": 0.25, "whisper_nodes": ["n1"], "wall_s": 1.5}
        stored[0] = job.id

    async def reopened(store: Any) -> None:
        again = await store.transcript(stored[0])
        assert again == transcript and again.dump() == transcript.dump()

    stored = [""]
    stores.run(test)
    stores.run(reopened)


RELEASE_BEFORE_OPTIONS = """CREATE TABLE jobs (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, language TEXT, task TEXT NOT NULL, word_timestamps INTEGER NOT NULL,
    prompt TEXT, temperature REAL NOT NULL DEFAULT 0, model TEXT NOT NULL, status TEXT NOT NULL,
    submitted_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT, error_code TEXT, error_message TEXT, audio_seconds REAL, progress REAL NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL, idempotency_key TEXT, timings TEXT NOT NULL DEFAULT '{}',
    source_kind TEXT NOT NULL DEFAULT 'upload', translate_to TEXT, batch_id TEXT, owner TEXT,
    options TEXT NOT NULL DEFAULT '{}')"""


def test_a_database_with_option_columns_is_folded_into_options(stores: Stores, tmp_path: Path) -> None:
    """A queue written when options had columns of their own: opened, each job's options are whole (a queued
    job keeps the language it asked for), the old columns are gone, and a second open changes nothing."""
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as old:
        old.execute(RELEASE_BEFORE_OPTIONS)
        insert = (
            "INSERT INTO jobs (id, source, language, task, word_timestamps, prompt, temperature, model, status,"
            " submitted_at, bytes, translate_to, options) VALUES (?, 'a.wav', ?, ?, ?, ?, ?, 'base', ?, ?, 5, ?, ?)"
        )
        old.execute(insert, ("job_q", "hi", "translate", 1, HINDI, 0.2, "queued", "2026-01-01T00:00:00+00:00", "en",
                             '{"hotwords": "Kenobi", "vad_filter": false}'))  # fmt: skip
        old.execute(insert, ("job_s", "en", "transcribe", 0, None, 0.0, "succeeded", "2026-01-01T00:00:01+00:00",
                             None, "{}"))  # fmt: skip
    asked = JobOptions(language="hi", task="translate", word_timestamps=True, prompt=HINDI, temperature=0.2,
                       translate_to="en", hotwords="Kenobi", vad_filter=False)  # fmt: skip

    async def test(store: Any) -> None:
        queued, done = await store.get("job_q"), await store.get("job_s")
        assert (queued.language, queued.options) == ("hi", asked)
        assert (done.language, done.options) == ("en", JobOptions())  # detected, not asked for: no option
        assert (await store.claim_next()).options == asked

    stores.run(test)
    stores.run(_still_folded(asked))
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
    assert not columns & {"task", "word_timestamps", "prompt", "temperature", "translate_to"}


def _still_folded(asked: JobOptions) -> Any:
    async def test(store: Any) -> None:
        assert (await store.get("job_q")).options == asked
        assert (await store.get("job_s")).options == JobOptions()

    return test


def test_open_removes_uploads_a_previous_process_left_half_received(stores: Stores) -> None:
    kept: list[Path] = []

    async def crashed(store: Any) -> None:
        kept.append(store.audio_path(new_job_id()))
        kept[0].write_bytes(b"a stored job's audio")
        store.incoming_path("left-by-a-crash").write_bytes(b"half an upload")

    async def reopened(store: Any) -> None:
        assert not list(store.blob_dir.glob(".incoming-*")) and kept[0].exists()

    stores.run(crashed)
    stores.run(reopened)
