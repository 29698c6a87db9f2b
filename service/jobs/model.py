"""The job record and its state machine."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from service.options import JobOptions, Lane
from service.transcript import Timings


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    TRANSCRIBED = "transcribed"
    TRANSLATING = "translating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# The states in which the job's transcript exists (translation may still be running).
TRANSCRIBED = frozenset({JobStatus.TRANSCRIBED, JobStatus.TRANSLATING, JobStatus.SUCCEEDED})

# Allowed moves; `running -> queued` is a retry (or recovery after a crash).
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.TRANSCRIBED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.TRANSCRIBED: frozenset({JobStatus.TRANSLATING, JobStatus.SUCCEEDED, JobStatus.CANCELLED}),
    # `translating -> transcribed` is recovery after a crash mid-translation.
    JobStatus.TRANSLATING: frozenset(
        {JobStatus.TRANSCRIBED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"a {current} job cannot become {target}")
        self.current, self.target = current, target


def check_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise InvalidTransition unless `current -> target` is allowed."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)


def now() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def new_batch_id() -> str:
    return "batch_" + uuid.uuid4().hex


@dataclass
class Job:
    """One transcription request, as stored."""

    id: str
    source: str  # uploads: the client's file name (display only); stage jobs: `@STAGE/path`
    source_kind: str = "upload"  # "upload" (audio in the store) | "stage" (audio read from the stage)
    # The language asked for at submit (None = auto-detect), replaced by the detected one once transcribed;
    # `options.language` keeps the one asked for.
    language: str | None = None
    model: str = ""
    options: JobOptions = field(default_factory=JobOptions)  # what the job asks of the model, kept whole
    status: JobStatus = JobStatus.QUEUED
    submitted_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    not_before: datetime | None = None  # retry backoff: not dispatched before this time
    error_code: str | None = None
    error_message: str | None = None
    audio_seconds: float | None = None
    progress: float = 0.0  # share of the speech transcribed so far, while running
    bytes: int = 0
    idempotency_key: str | None = None
    batch_id: str | None = None
    owner: str | None = None  # the Snowflake user who submitted it (SPCS's Sf-Context-Current-User)
    lane: Lane = "bulk"  # the queue it waits in, decided at submit (service/jobs/lanes.py)
    timings: Timings = field(default_factory=Timings)  # the transcript's, once transcribed

    @property
    def processing_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


@dataclass
class Batch:
    """Every file under a stage prefix matching a pattern, one job each."""

    id: str
    stage: str  # `@STAGE` or `@STAGE/prefix`
    pattern: str
    options: JobOptions = field(default_factory=JobOptions)  # the job options every file of the batch gets
    created_at: datetime = field(default_factory=now)
    files: int = 0
