"""Response shapes of the job API (pydantic, so they appear in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from service.jobs.model import TRANSCRIBED, Job, JobStatus
from service.options import JobOptions, Lane


class ErrorInfo(BaseModel):
    code: str
    message: str


class Progress(BaseModel):
    fraction: float
    audio_seconds: float | None
    done_seconds: float | None


class Timings(BaseModel):
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_s: float | None
    processing_s: float | None
    seconds_per_audio_second: float | None
    decode_s: float | None = None
    inference_s: float | None = None
    speakers_s: float | None = None  # speaker embeddings (beside inference) and clustering, when asked
    whisper_nodes: list[str] | None = None  # Ray nodes whose Whisper replicas decoded the job


class JobLinks(BaseModel):
    self: str
    transcript: str
    translation: str | None = None


class JobView(BaseModel):
    id: str
    status: JobStatus
    source: str
    language: str | None
    task: str
    word_timestamps: bool
    model: str
    attempts: int
    bytes: int
    audio_seconds: float | None
    progress: Progress
    timings: Timings
    error: ErrorInfo | None
    idempotency_key: str | None
    translate_to: str | None = None
    speakers: str | None = None  # diarization asked for: "auto", "3", "2-4"; None: off
    batch_id: str | None = None
    owner: str | None = None
    lane: Lane = "bulk"  # interactive (claimed first with fair scheduling) or bulk
    options: JobOptions  # every option the job runs with (the flat fields above repeat the common ones)
    links: JobLinks

    @classmethod
    def of(cls, job: Job) -> JobView:
        done = job.status in TRANSCRIBED
        audio = job.audio_seconds
        fraction = 1.0 if done else (job.progress if job.status == "running" else 0.0)
        queued_until = job.started_at or job.finished_at
        processing = job.processing_seconds
        return cls(
            id=job.id,
            status=job.status.value,
            source=job.source,
            language=job.language,
            task=job.options.task,
            word_timestamps=job.options.word_timestamps,
            options=job.options,
            model=job.model,
            attempts=job.attempts,
            bytes=job.bytes,
            audio_seconds=audio,
            progress=Progress(
                fraction=fraction,
                audio_seconds=audio,
                done_seconds=round(fraction * audio, 3) if audio is not None else None,
            ),
            timings=Timings(
                submitted_at=job.submitted_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                queued_s=(queued_until - job.submitted_at).total_seconds() if queued_until else None,
                processing_s=processing,
                seconds_per_audio_second=round(processing / audio, 4) if processing and audio else None,
                decode_s=job.timings.decode_s,
                inference_s=job.timings.inference_s,
                speakers_s=job.timings.speakers_s,
                whisper_nodes=job.timings.whisper_nodes,
            ),
            error=ErrorInfo(code=job.error_code, message=job.error_message or "") if job.error_code else None,
            idempotency_key=job.idempotency_key,
            translate_to=job.options.translate_to,
            speakers=None if job.options.speakers is None else str(job.options.speakers),
            batch_id=job.batch_id,
            owner=job.owner,
            lane=job.lane,
            links=JobLinks(
                self=f"/v1/jobs/{job.id}",
                transcript=f"/v1/jobs/{job.id}/transcript",
                translation=f"/v1/jobs/{job.id}/translation" if job.options.translate_to else None,
            ),
        )


class TranslationView(BaseModel):
    text: str
    source_language: str | None
    target_language: str
    method: str  # cortex.translate | cortex.complete:<model> | whisper | none (already in that language)


class BatchView(BaseModel):
    id: str
    stage: str
    pattern: str
    options: dict
    created_at: datetime
    status: Literal["running", "succeeded", "failed", "partial", "cancelled"]
    files: int
    jobs: list[str]
    counts: dict[str, int]
    audio_seconds_done: float
    audio_seconds_total: float | None  # None until every file's length is known
    links: dict[str, str]


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


class Health(BaseModel):
    status: str


class ExportHealth(BaseModel):
    """The Snowflake export (Snowflake store only); the gateway stays ready while it retries."""

    pending: int
    failures: int
    last_error: str | None = None
    last_success: float | None = None


class Readiness(BaseModel):
    status: str
    store: str
    inference: str
    snowflake_export: ExportHealth | None = None
    engine: str | None = None
    model: str | None = None
    multilingual: bool | None = None
