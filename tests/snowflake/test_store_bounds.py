"""Backlog bounds checked in the write that adds jobs, for both stores: SQLite (a real file) and the Snowflake
store on Snowpark local testing (Snowflake's own emulator). One contract, run against each store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from service.jobs.model import Batch, Job, new_batch_id, new_job_id
from service.storage.base import Bounds, QueueFull
from service.storage.sqlite import SQLiteStore
from tests.snowflake.outage import FlakySessions, open_store, run

STORES = ["sqlite", "snowflake"]


async def _open(kind: str, tmp_path: Path, sessions: FlakySessions) -> Any:
    if kind == "snowflake":
        return await open_store(tmp_path, sessions)
    store = SQLiteStore(tmp_path)
    await store.open()
    return store


def _with_store(kind: str, tmp_path: Path, sessions: FlakySessions, test: Callable[[Any], Awaitable[None]]) -> None:
    async def go() -> None:
        store = await _open(kind, tmp_path, sessions)
        try:
            await test(store)
        finally:
            await store.close()

    run(go())


async def _upload(store: Any, owner: str | None = None, bounds: Bounds | None = None) -> tuple[Job, Path]:
    incoming = store.incoming_path(new_job_id())
    incoming.write_bytes(b"audio")
    job = Job(id=new_job_id(), source="a.wav", bytes=5, owner=owner)
    return await store.add(job, incoming, bounds), incoming


@pytest.mark.parametrize("kind", STORES)
def test_the_bound_holds_and_a_refused_job_leaves_nothing(kind: str, tmp_path: Path, sessions: FlakySessions) -> None:
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
        assert await store.save_transcript(claimed, {"text": "hi", "language": "en", "duration": 1.0, "segments": []})
        await _upload(store, bounds=limit)

    _with_store(kind, tmp_path, sessions, test)


@pytest.mark.parametrize("kind", STORES)
def test_one_owner_is_bounded_while_others_go_on(kind: str, tmp_path: Path, sessions: FlakySessions) -> None:
    async def test(store: Any) -> None:
        for _ in range(2):
            await _upload(store, "ALICE", Bounds(10, "ALICE", 2))
        with pytest.raises(QueueFull) as refused:
            await _upload(store, "ALICE", Bounds(10, "ALICE", 2))
        assert (refused.value.code, refused.value.owner, refused.value.active) == ("too_many_jobs", "ALICE", 2)
        await _upload(store, "BOB", Bounds(10, "BOB", 2))
        assert await store.count_active("ALICE") == 2 and await store.count_active() == 3

    _with_store(kind, tmp_path, sessions, test)


@pytest.mark.parametrize("kind", STORES)
def test_a_batch_that_would_pass_the_bound_stores_nothing(kind: str, tmp_path: Path, sessions: FlakySessions) -> None:
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

    _with_store(kind, tmp_path, sessions, test)
