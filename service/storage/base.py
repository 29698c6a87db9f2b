"""The store interface every backend (SQLite, Snowflake) implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from service.jobs.model import Batch, Job, JobStatus
from service.options import Lane
from service.transcript import Transcript

# The order queued jobs are claimed in (GatewaySettings.scheduling): `fair`: interactive before bulk, then the
# owner with the fewest jobs running, then the oldest; `fifo`: the oldest.
Scheduling = Literal["fair", "fifo"]


class DuplicateIdempotencyKey(Exception):
    """Another job of the same owner already holds this idempotency key; `job` is that job."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"idempotency key already used by {job.id}")
        self.job = job


class QueueFull(Exception):
    """Adding the jobs would pass a backlog bound: `code` is queue_full (all jobs) or too_many_jobs (one
    owner's); `active` is the backlog the bound applies to."""

    def __init__(self, code: str, active: int, limit: int, owner: str | None = None) -> None:
        super().__init__(f"{code}: {active} active, limit {limit}")
        self.code, self.active, self.limit, self.owner = code, active, limit, owner


@dataclass(frozen=True)
class Bounds:
    """Backlog limits a write must respect: jobs queued or running in all, and of one owner."""

    max_active: int
    owner: str | None = None
    max_owner_active: int | None = None

    @property
    def per_owner(self) -> bool:
        return self.owner is not None and self.max_owner_active is not None

    def check(self, adding: int, active: int, owner_active: int | None) -> None:
        """Raise QueueFull when `adding` more jobs would pass a bound."""
        if active + adding > self.max_active:
            raise QueueFull("queue_full", active, self.max_active)
        owner_limit = self.max_owner_active if self.per_owner else None
        if owner_limit is not None and owner_active is not None and owner_active + adding > owner_limit:
            raise QueueFull("too_many_jobs", owner_active, owner_limit, self.owner)


class StoreUnavailable(ConnectionError):
    """The store does not answer now (e.g. Snowflake unreachable): the API answers 503, work is retried."""


class JobStore(Protocol):
    """Jobs, their audio blobs and their transcripts. All methods are safe to call from one event loop."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise when the store does not answer."""

    async def add(self, job: Job, audio: Path | None, bounds: Bounds | None = None) -> Job:
        """Durably store the job and move `audio` into the store (None: a stage job, whose audio stays on
        its stage); raises DuplicateIdempotencyKey, or QueueFull when `bounds` would be passed."""

    async def add_batch(self, batch: Batch, jobs: list[Job], bounds: Bounds | None = None) -> None:
        """Store a batch and its (stage) jobs in one transaction: all of them or none (QueueFull: none)."""

    async def get_batch(self, batch_id: str) -> Batch | None: ...
    async def batch_jobs(self, batch_id: str) -> list[Job]:
        """The batch's jobs, in the order they were created."""

    async def get(self, job_id: str) -> Job | None: ...
    async def find_by_idempotency_key(self, key: str, owner: str | None) -> Job | None:
        """The job `owner` submitted with this idempotency key (owner None: a job without an owner). Keys are
        unique per owner only: another owner's job never matches."""

    async def list(
        self, status: JobStatus | None, limit: int, before: tuple[str, str] | None, owner: str | None = None
    ) -> list[Job]:
        """Newest first; `before` is the (submitted_at iso, id) of the last job of the previous page;
        `owner` keeps only that user's jobs."""

    async def claim_next(self, scheduling: Scheduling = "fair", only: Lane | None = None) -> Job | None:
        """Atomically move the next due queued job to running (attempts + 1) and return it: with `fifo` the
        oldest (submitted_at, id); with `fair` interactive before bulk, then the job whose owner has the fewest
        jobs running (no owner counts as one owner), then the shortest (interactive) or oldest (bulk). `only`:
        a job of that lane or none (the dispatcher's interactive reserve), in the fair order."""

    async def set_progress(self, job: Job, fraction: float) -> None:
        """Record how far a running attempt has got (ignored once the job moved on)."""

    async def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each status."""

    async def count_active(self, owner: str | None = None) -> int:
        """Jobs queued or running (of `owner` only, when given): the backlog the queue bounds apply to."""

    async def requeue_running(self) -> int:
        """After a restart: running jobs go back to the queue and translating ones back to transcribed
        (their translation starts over). Returns how many jobs moved."""

    async def transition(self, job: Job, target: JobStatus, **fields: Any) -> bool:
        """Move `job` to `target` only if it is still in its stored status and attempt; False if not."""

    async def save_transcript(self, job: Job, transcript: Transcript, target: JobStatus = JobStatus.SUCCEEDED) -> bool:
        """Store the transcript and move the job to `target` (succeeded, or transcribed when a translation
        follows) in one step; False if the job moved on. Stored at most once per job id."""

    async def transcript(self, job_id: str) -> Transcript | None:
        """The stored transcript (one stored by an earlier release loads too)."""

    async def save_translation(self, job: Job, translation: dict[str, Any]) -> bool:
        """Store the translation (`text`, `source_language`, `target_language`, `method`) and mark the
        `translating` job succeeded in one step; False if the job moved on."""

    async def translation(self, job_id: str) -> dict[str, Any] | None: ...
    def audio_path(self, job_id: str) -> Path: ...
    def incoming_path(self, token: str) -> Path:
        """Where an upload is written before `add` makes it a job's audio (same filesystem: atomic rename)."""

    async def delete(self, job_id: str) -> None: ...
    async def purge(self, rows_before: datetime | None, audio_before: datetime | None) -> tuple[int, int]:
        """Retention, local only: audio of finished uploads before `audio_before`, finished jobs before
        `rows_before`; returns (audio files, jobs) removed."""
