"""A job is stored with its audio or not at all (issue 14): an `add` that fails for any reason (a full disk,
here SQLite's own "database or disk is full") leaves no upload behind, and an `add` whose caller goes away
while the transaction commits (a client that disconnected) leaves the job with its audio. The real SQLite
store on a real file; the failure and the slow commit are injected into its insert."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.api.admission import _add
from service.config import Settings
from service.jobs.model import Job, new_job_id
from service.storage.sqlite import SQLiteStore


class FullDisk(SQLiteStore):
    @staticmethod
    def _insert_job(conn: sqlite3.Connection, job: Job) -> None:
        raise sqlite3.OperationalError("database or disk is full")


class SlowDisk(SQLiteStore):
    @staticmethod
    def _insert_job(conn: sqlite3.Connection, job: Job) -> None:
        SQLiteStore._insert_job(conn, job)
        time.sleep(0.5)  # the commit is under way when the caller gives up


def _state(store: SQLiteStore, tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        store=store, settings=Settings(data_dir=tmp_path), dispatcher=SimpleNamespace(wake=lambda: None)
    )


def _files(store: SQLiteStore) -> list[str]:
    return sorted(p.name for p in store.blob_dir.iterdir())


def test_a_failed_add_leaves_no_upload_behind(tmp_path: Path) -> None:
    async def go() -> None:
        store = FullDisk(tmp_path)
        await store.open()
        incoming = store.incoming_path("upload")
        incoming.write_bytes(b"audio")
        with pytest.raises(sqlite3.OperationalError):
            await _add(_state(store, tmp_path), Job(id=new_job_id(), source="a.wav"), incoming)
        assert _files(store) == []
        await store.close()

    asyncio.run(go())


def test_an_add_cancelled_while_it_commits_keeps_the_job_with_its_audio(tmp_path: Path) -> None:
    async def go() -> None:
        store = SlowDisk(tmp_path)
        await store.open()
        incoming = store.incoming_path("upload")
        incoming.write_bytes(b"audio")
        job = Job(id=new_job_id(), source="a.wav")
        task = asyncio.ensure_future(_add(_state(store, tmp_path), job, incoming))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = await store.get(job.id)
        assert stored is not None and store.audio_path(job.id).read_bytes() == b"audio"
        assert _files(store) == [job.id]  # and no stray incoming file
        await store.close()

    asyncio.run(go())
