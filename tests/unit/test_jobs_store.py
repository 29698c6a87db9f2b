"""Job state machine and the SQLite store (real SQLite files, real fsync/rename)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from service.jobs.model import (
    Batch,
    InvalidTransition,
    Job,
    JobStatus,
    check_transition,
    new_batch_id,
    new_job_id,
    now,
)
from service.storage.base import DuplicateIdempotencyKey
from service.storage.sqlite import SQLiteStore


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "running"),
        ("queued", "cancelled"),
        ("running", "succeeded"),
        ("running", "queued"),
        ("running", "failed"),
        ("running", "transcribed"),
        ("transcribed", "translating"),
        ("translating", "succeeded"),
    ],
)
def test_allowed_transitions(current: str, target: str) -> None:
    check_transition(JobStatus(current), JobStatus(target))


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "succeeded"),
        ("succeeded", "running"),
        ("failed", "queued"),
        ("cancelled", "running"),
        ("succeeded", "cancelled"),
    ],
)
def test_refused_transitions(current: str, target: str) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(JobStatus(current), JobStatus(target))


def run(coro):
    return asyncio.run(coro)


async def _store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path)
    await store.open()
    return store


async def _add(store: SQLiteStore, key: str | None = None, **kw) -> Job:
    incoming = store.incoming_path(new_job_id())
    incoming.write_bytes(b"audio")
    return await store.add(Job(id=new_job_id(), source="a.wav", bytes=5, idempotency_key=key, **kw), incoming)


def test_add_moves_audio_and_persists(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path)
        job = await _add(store)
        assert store.audio_path(job.id).read_bytes() == b"audio"
        await store.close()
        reopened = await _store(tmp_path)  # a new process sees the committed job
        again = await reopened.get(job.id)
        assert again is not None and again.status == JobStatus.QUEUED and again.source == "a.wav"
        await reopened.close()

    run(go())


def test_idempotency_key_is_unique(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path)
        first = await _add(store, key="k1")
        with pytest.raises(DuplicateIdempotencyKey) as dup:
            await _add(store, key="k1")
        assert dup.value.job.id == first.id
        assert len(list(store.blob_dir.glob(".incoming-*"))) == 1  # the refused upload stays with the caller
        await store.close()

    run(go())


def test_claim_finish_and_fencing(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path)
        a = await _add(store)
        b = await _add(store)
        claimed = await store.claim_next()
        assert claimed is not None and claimed.id == a.id and claimed.attempts == 1
        assert claimed.status == JobStatus.RUNNING
        assert await store.save_transcript(claimed, {"text": "hi", "language": "en", "duration": 1.0, "segments": []})
        # A stale copy (same job, older status) can no longer change it: exactly one result per job.
        assert not await store.save_transcript(claimed, {"text": "again", "segments": []})
        assert (await store.transcript(a.id))["text"] == "hi"
        done = await store.get(a.id)
        assert done.status == JobStatus.SUCCEEDED and done.finished_at is not None and done.language == "en"
        second = await store.claim_next()
        assert second.id == b.id
        assert await store.claim_next() is None
        await store.close()

    run(go())


def test_retry_backoff_and_recovery(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path)
        await _add(store)
        job = await store.claim_next()
        assert await store.transition(job, JobStatus.QUEUED, not_before=now() + timedelta(hours=1))
        assert await store.claim_next() is None  # not due yet
        other = await _add(store)
        running = await store.claim_next()
        assert running.id == other.id
        assert await store.requeue_running() == 1  # what a restart does
        assert (await store.get(other.id)).status == JobStatus.QUEUED
        await store.close()

    run(go())


def test_list_pages_newest_first(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path)
        ids = [(await _add(store)).id for _ in range(5)]
        page1 = await store.list(None, 3, None)
        assert [j.id for j in page1] == ids[::-1][:3]
        last = page1[-1]
        page2 = await store.list(None, 3, (last.submitted_at.isoformat(), last.id))
        assert [j.id for j in page2] == ids[::-1][3:]
        assert await store.list(JobStatus.SUCCEEDED, 10, None) == []
        await store.delete(ids[0])
        assert await store.get(ids[0]) is None and not store.audio_path(ids[0]).exists()
        await store.close()

    run(go())


def test_batches_translations_and_recovery_of_translating_jobs(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path)
        batch = Batch(new_batch_id(), "@S", ".*", options={"language": "hi"}, files=2)
        stamp = now()
        jobs = [
            Job(
                id=new_job_id(),
                source=f"@S/{n}",
                source_kind="stage",
                batch_id=batch.id,
                translate_to="en",
                submitted_at=stamp + timedelta(microseconds=i),
            )
            for i, n in enumerate(("b.mp3", "a.mp3"))
        ]
        await store.add_batch(batch, jobs)
        assert not store.audio_path(jobs[0].id).exists()  # stage audio stays on its stage
        stored = await store.get_batch(batch.id)
        assert stored is not None and stored.options == {"language": "hi"} and stored.files == 2
        assert [j.source for j in await store.batch_jobs(batch.id)] == ["@S/b.mp3", "@S/a.mp3"]
        claimed = await store.claim_next()
        assert claimed is not None and claimed.id == jobs[0].id
        assert await store.save_transcript(claimed, {"text": "नमस्ते", "language": "hi"}, JobStatus.TRANSCRIBED)
        transcribed = await store.get(claimed.id)
        assert transcribed is not None and transcribed.status == JobStatus.TRANSCRIBED
        assert await store.transition(transcribed, JobStatus.TRANSLATING)
        assert await store.requeue_running() == 1  # a restart mid-translation: back to transcribed
        again = await store.get(claimed.id)
        assert again is not None and again.status == JobStatus.TRANSCRIBED
        assert await store.transition(again, JobStatus.TRANSLATING)
        translating = await store.get(claimed.id)
        translation = {"text": "hello", "source_language": "hi", "target_language": "en", "method": "whisper"}
        assert await store.save_translation(translating, translation)
        assert not await store.save_translation(translating, translation)  # fenced: already succeeded
        assert await store.translation(claimed.id) == translation
        assert (await store.get(claimed.id)).status == JobStatus.SUCCEEDED
        assert await store.get_batch("batch_missing") is None
        await store.close()

    run(go())


def test_open_removes_uploads_a_previous_process_left_half_received(tmp_path: Path) -> None:
    async def go() -> None:
        store = SQLiteStore(tmp_path)
        await store.open()
        kept = store.audio_path(new_job_id())
        kept.write_bytes(b"a stored job's audio")
        store.incoming_path("left-by-a-crash").write_bytes(b"half an upload")
        await store.close()
        store = SQLiteStore(tmp_path)
        await store.open()
        assert not list(store.blob_dir.glob(".incoming-*")) and kept.exists()
        await store.close()

    asyncio.run(go())
