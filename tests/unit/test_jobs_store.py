"""The job state machine, and what only the SQLite store does; the behaviour both stores share is the
contract suite in tests/snowflake/test_store_contract.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.jobs.model import (
    InvalidTransition,
    JobStatus,
    check_transition,
    new_job_id,
)
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
