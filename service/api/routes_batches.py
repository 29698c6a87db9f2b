"""Batches: every file under a stage prefix matching a pattern, one job each (the notebook's workflow)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.admission import accept_batch
from service.api.deps import CallerDep, ServicesDep, StoreDep
from service.api.errors import ApiError
from service.api.intake import BatchRequest, json_fields, validated
from service.api.schemas import BatchView
from service.jobs.model import Batch, Job, JobStatus

router = APIRouter(prefix="/v1/batches", tags=["batches"])
DONE = (JobStatus.SUCCEEDED, JobStatus.TRANSCRIBED, JobStatus.TRANSLATING)


def batch_view(batch: Batch, jobs: list[Job]) -> BatchView:
    counts = Counter(job.status.value for job in jobs)
    done = sum(
        (job.audio_seconds or 0.0) * (1.0 if job.status in DONE else job.progress)
        for job in jobs
        if job.status in DONE or job.status == JobStatus.RUNNING
    )
    lengths = [job.audio_seconds for job in jobs]
    known = [length for length in lengths if length is not None]
    if any(not job.status.terminal for job in jobs):
        status = "running"
    elif counts.get("succeeded", 0) == len(jobs):
        status = "succeeded"
    elif counts.get("cancelled", 0) == len(jobs):
        status = "cancelled"
    else:
        status = "failed" if not counts.get("succeeded") else "partial"
    return BatchView(
        id=batch.id,
        stage=batch.stage,
        pattern=batch.pattern,
        options=batch.options.stored(),  # those that differ from the defaults
        created_at=batch.created_at,
        status=status,
        files=batch.files,
        jobs=[job.id for job in jobs],
        counts=dict(counts),
        audio_seconds_done=round(done, 3),
        audio_seconds_total=round(sum(known), 3) if len(known) == len(lengths) else None,
        links={"self": f"/v1/batches/{batch.id}", "jobs": "/v1/jobs/{id}"},
    )


@router.post(
    "",
    status_code=202,
    response_model=BatchView,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": BatchRequest.model_json_schema()}}}
    },
)
async def create_batch(request: Request, services: ServicesDep, who: CallerDep) -> JSONResponse:
    """`{"stage": "@AUDIO_FILES_STAGE", "pattern": ".*[.]mp4", "language": "hi", "translate_to": "en"}` →
    one job per matching file, all stored before the 202. The stage must be on the stage allow-list (403
    `stage_not_allowed`); the pattern is RE2 (422 `invalid_pattern` for what RE2 lacks, `pattern_timeout` past
    BATCH_MATCH_TIMEOUT_S)."""
    body = validated(BatchRequest, await json_fields(request, services.settings))
    batch, jobs = await accept_batch(services, body, who.user, who.role)
    view = batch_view(batch, jobs).model_dump(mode="json")
    return JSONResponse(view, status_code=202, headers={"location": f"/v1/batches/{batch.id}"})


@router.get("/{batch_id}", response_model=BatchView)
async def get_batch(store: StoreDep, who: CallerDep, batch_id: str) -> BatchView:
    batch = await store.get_batch(batch_id)
    jobs = await store.batch_jobs(batch_id) if batch else []
    if batch is None or not all(who.sees(job) for job in jobs):
        raise ApiError(404, "batch_not_found", f"no batch with id {batch_id!r}")
    return batch_view(batch, jobs)
