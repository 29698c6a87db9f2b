"""The order queued jobs are claimed in (`claim_next(scheduling)`), for every store (the `stores` fixture): fair
(interactive before bulk, then the owner with the fewest jobs running, then the oldest) and fifo (the oldest);
the `lane` column round-trips and an older database gets it; and the fair claim against a plain reference
ordering, on random queues."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.jobs.model import Job, JobStatus, new_job_id, now
from service.options import Lane
from service.storage.base import Scheduling
from service.storage.sqlite import SQLiteStore
from service.storage.sqlite_schema import JOBS_TABLE
from tests.storage.conftest import Stores
from tests.storage.helpers import add_job, run

T0 = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def _queue(store: Any) -> dict[str, Job]:
    """ALICE has two jobs running; then, oldest first: ALICE bulk x2, BOB bulk, ALICE interactive, a job without
    an owner (bulk), BOB interactive."""
    for i in range(2):
        await add_job(store, owner="ALICE", submitted_at=at(i))
        assert (await store.claim_next("fifo")).owner == "ALICE"
    spec: list[tuple[str, str | None, Lane]] = [
        ("a1", "ALICE", "bulk"),
        ("a2", "ALICE", "bulk"),
        ("b1", "BOB", "bulk"),
        ("a3", "ALICE", "interactive"),
        ("n1", None, "bulk"),
        ("b2", "BOB", "interactive"),
    ]
    return {
        name: await add_job(store, owner=owner, lane=lane, submitted_at=at(10 + i))
        for i, (name, owner, lane) in enumerate(spec)
    }


async def _claim_all(store: Any, jobs: dict[str, Job], scheduling: Scheduling) -> list[str]:
    names = {job.id: name for name, job in jobs.items()}
    order = []
    while (claimed := await store.claim_next(scheduling)) is not None:
        assert claimed.status == JobStatus.RUNNING and claimed.lane == jobs[names[claimed.id]].lane
        order.append(names[claimed.id])
    return order


def test_fair_claims_interactive_first_then_the_least_served_owner(stores: Stores) -> None:
    async def test(store: Any) -> None:
        jobs = await _queue(store)
        # interactive: BOB (0 running) before ALICE (2); bulk: no owner (0), BOB (1), then ALICE's oldest first
        assert await _claim_all(store, jobs, "fair") == ["b2", "a3", "n1", "b1", "a1", "a2"]

    stores.run(test)


def test_fifo_claims_the_oldest_whatever_the_lane_and_owner(stores: Stores) -> None:
    async def test(store: Any) -> None:
        jobs = await _queue(store)
        assert await _claim_all(store, jobs, "fifo") == ["a1", "a2", "b1", "a3", "n1", "b2"]

    stores.run(test)


def test_fair_skips_an_interactive_job_not_due_yet_and_breaks_ties_by_id(stores: Stores) -> None:
    async def test(store: Any) -> None:
        later = await add_job(store, lane="interactive", submitted_at=at(0), not_before=now() + timedelta(hours=1))
        first, second = sorted([new_job_id(), new_job_id()])
        await add_job(store, id=second, owner="BOB", submitted_at=at(5))
        await add_job(store, id=first, owner="ALICE", submitted_at=at(5))
        assert (await store.claim_next("fair")).id == first  # same time, same running count: the smaller id
        assert (await store.claim_next("fair")).id == second
        assert await store.claim_next("fair") is None
        assert (await store.get(later.id)).status == JobStatus.QUEUED

    stores.run(test)


def test_the_lane_is_kept(stores: Stores) -> None:
    ids: list[str] = []

    async def test(store: Any) -> None:
        ids.append((await add_job(store, lane="interactive")).id)
        ids.append((await add_job(store)).id)

    async def reopened(store: Any) -> None:
        assert [(await store.get(i)).lane for i in ids] == ["interactive", "bulk"]
        assert [j.lane for j in await store.list(JobStatus.QUEUED, 10, None)] == ["bulk", "interactive"]

    stores.run(test)
    stores.run(reopened)


def test_a_database_without_lanes_gets_the_column_and_its_jobs_wait_as_bulk(stores: Stores, tmp_path: Path) -> None:
    """A queue of the release before lanes: opened, its jobs are bulk and claimed; the claim index exists."""
    before = JOBS_TABLE.replace(",\n    lane TEXT NOT NULL DEFAULT 'bulk'", "")
    assert "lane" not in before
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as old:
        old.execute(before)
        old.execute(
            "INSERT INTO jobs (id, source, model, status, submitted_at, bytes, owner)"
            " VALUES ('job_old', '@S/a.wav', 'base', 'queued', '2026-01-01T00:00:00+00:00', 5, 'ALICE')"
        )

    async def test(store: Any) -> None:
        assert (await store.get("job_old")).lane == "bulk"
        fresh = await add_job(store, owner="BOB", lane="interactive")
        assert (await store.claim_next("fair")).id == fresh.id
        assert (await store.claim_next("fair")).id == "job_old"

    stores.run(test)
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert "lane" in {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
        assert "jobs_claim" in {r[1] for r in db.execute("PRAGMA index_list(jobs)")}


def _reference(jobs: list[Job], stamp: datetime) -> str | None:
    """The fair claim, spelled out: every due queued job ordered by (lane, owner's running jobs, the shortest
    audio first in the interactive lane, time, id)."""
    running: dict[str | None, int] = {}
    for job in jobs:
        if job.status == JobStatus.RUNNING:
            running[job.owner] = running.get(job.owner, 0) + 1
    due = [j for j in jobs if j.status == JobStatus.QUEUED and (j.not_before is None or j.not_before <= stamp)]
    if not due:
        return None

    def shortest(job: Job) -> float:
        return (job.audio_seconds or float("inf")) if job.lane == "interactive" else 0.0

    best = min(due, key=lambda j: (j.lane != "interactive", running.get(j.owner, 0), shortest(j), j.submitted_at, j.id))
    return best.id


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fair_claims_match_the_reference_order_on_random_queues(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    owners = [None, "", "ALICE", "BOB", "CAROL", "DAVE"]

    async def go() -> None:
        store = SQLiteStore(tmp_path)
        await store.open()
        try:
            for _ in range(150):
                not_before = now() + timedelta(hours=1) if rng.random() < 0.1 else None
                lane: Lane = "interactive" if rng.random() < 0.3 else "bulk"
                when = at(rng.randrange(40))  # many equal times: ties go by id
                seconds = rng.choice([None, 4.8, 11.0, 11.0, 27.3])  # unknown, or as probed at submit
                await add_job(
                    store,
                    owner=rng.choice(owners),
                    lane=lane,
                    submitted_at=when,
                    not_before=not_before,
                    audio_seconds=seconds,
                )
            for _ in range(200):
                everything = await store.list(None, 1000, None)
                expected = _reference(everything, now())
                claimed = await store.claim_next("fair")
                assert (claimed.id if claimed else None) == expected
                if claimed is None:
                    break
                if rng.random() < 0.4:  # some finish, so owners' running counts go down as well as up
                    running = await store.list(JobStatus.RUNNING, 1000, None)
                    await store.transition(rng.choice(running), JobStatus.SUCCEEDED)
        finally:
            await store.close()

    run(go())


def test_only_a_lane_claims_that_lane_or_nothing(stores: Stores) -> None:
    """The dispatcher's interactive reserve: `only="interactive"` never takes a bulk job."""

    async def go(store: Any) -> None:
        bulk = await add_job(store, owner="ALICE", lane="bulk", submitted_at=at(0))
        assert await store.claim_next("fair", only="interactive") is None
        short = await add_job(store, owner="BOB", lane="interactive", submitted_at=at(1), audio_seconds=11.0)
        assert (await store.claim_next("fair", only="interactive")).id == short.id
        assert await store.claim_next("fair", only="interactive") is None
        assert (await store.claim_next("fair")).id == bulk.id

    stores.run(go)
