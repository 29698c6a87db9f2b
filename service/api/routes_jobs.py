"""The job API: submit, read, list, fetch transcripts, cancel/delete."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile

from service.api.errors import ApiError
from service.api.schemas import JobList, JobView
from service.api.uploads import receive_upload
from service.formats import FORMATS, render
from service.jobs.model import InvalidTransition, Job, JobStatus, new_job_id
from service.languages import normalise_language
from service.storage.base import DuplicateIdempotencyKey

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

SUBMIT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "language": {"type": "string", "default": "auto"},
                        "task": {"type": "string", "enum": ["transcribe", "translate"]},
                        "word_timestamps": {"type": "boolean", "default": False},
                        "model": {"type": "string"},
                        "idempotency_key": {"type": "string", "maxLength": 200},
                    },
                }
            }
        },
    }
}


class SubmitOptions(BaseModel):
    """The form fields next to `file`; unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    model: str | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return normalise_language(value)


def _options(fields: dict[str, str], header_key: str | None) -> SubmitOptions:
    if header_key:
        fields.setdefault("idempotency_key", header_key)
    try:
        return SubmitOptions(**fields)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "form", "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise ApiError(422, "validation_error", f"invalid form fields: {summary}", fields=problems) from None


def _check_model(options: SubmitOptions, info: dict | None, configured: str) -> str:
    """The model that will run the job; refuses what it cannot do (English-only model, other model)."""
    served = (info or {}).get("model", configured)
    if options.model not in (None, "", served, "whisper-1"):
        raise ApiError(422, "unsupported_model", f"this service runs model {served!r}, not {options.model!r}")
    english_only = bool(info) and not info.get("multilingual", True)
    if english_only and (options.language not in (None, "en") or options.task == "translate"):
        raise ApiError(422, "unsupported_language", f"model {served!r} is English-only")
    return served


async def _check_backlog(state) -> None:
    """429 with Retry-After once the backlog reaches its bound: back-pressure, never a 5xx."""
    active = await state.store.count_active()
    if active >= state.settings.max_queued_jobs:
        raise ApiError(429, "queue_full", f"{active} jobs are waiting; retry later", retry_after=30, queued=active)


def _job_response(job: Job, status_code: int, **headers: str) -> JSONResponse:
    body = JobView.of(job).model_dump(mode="json")
    return JSONResponse(body, status_code=status_code, headers={"location": f"/v1/jobs/{job.id}", **headers})


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    openapi_extra=SUBMIT_SCHEMA,
    responses={200: {"description": "replayed: a job with this idempotency key exists"}},
)
async def submit_job(request: Request) -> JSONResponse:
    """Accept an audio/video file; answers 202 once the file and the job are durably stored."""
    state = request.app.state
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media", "send multipart/form-data with the audio in a `file` part")
    async with request.form(max_files=1, max_fields=16, max_part_size=64 * 1024) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "the form has no `file` part holding the audio")
        fields = {k: v for k, v in form.multi_items() if k != "file" and isinstance(v, str)}
        options = _options(fields, request.headers.get("idempotency-key"))
        if options.idempotency_key:
            existing = await state.store.find_by_idempotency_key(options.idempotency_key)
            if existing:
                return _job_response(existing, 200, **{"idempotent-replayed": "true"})
        model = _check_model(options, state.dispatcher.model_info, state.settings.model)
        await _check_backlog(state)
        path, size, info = await receive_upload(upload, state.store.blob_dir, state.settings)
    job = Job(
        id=new_job_id(),
        source=(upload.filename or "upload")[:500],
        language=options.language,
        task=options.task,
        word_timestamps=options.word_timestamps,
        model=model,
        audio_seconds=info.duration,
        bytes=size,
        idempotency_key=options.idempotency_key,
    )
    try:
        job = await state.store.add(job, path)
    except DuplicateIdempotencyKey as dup:
        path.unlink(missing_ok=True)
        return _job_response(dup.job, 200, **{"idempotent-replayed": "true"})
    state.dispatcher.wake()
    return _job_response(job, 202)


async def _job_or_404(request: Request, job_id: str) -> Job:
    job = await request.app.state.store.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return job


@router.get("/{job_id}", response_model=JobView)
async def get_job(request: Request, job_id: str) -> JobView:
    return JobView.of(await _job_or_404(request, job_id))


@router.get("/{job_id}/transcript", responses={200: {"content": {t: {} for t in FORMATS.values()}}})
async def get_transcript(
    request: Request, job_id: str, format: str = Query("json", description=", ".join(FORMATS))
) -> Response:
    if format not in FORMATS:
        raise ApiError(400, "unsupported_format", f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    job = await _job_or_404(request, job_id)
    if job.status == JobStatus.FAILED:
        raise ApiError(409, "job_failed", f"the job failed: {job.error_message}", job_status=job.status.value)
    transcript = await request.app.state.store.transcript(job_id)
    if transcript is None:
        raise ApiError(
            409, "not_ready", f"the job is {job.status.value}; no transcript yet", job_status=job.status.value
        )
    body, media_type = render(transcript, format, job.task)
    headers = {}
    if format in ("srt", "vtt", "text"):
        stem = job.source.rsplit(".", 1)[0] or job.id
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:100]
        ext = "txt" if format == "text" else format
        headers["content-disposition"] = f'inline; filename="{safe}.{ext}"'
    return Response(body, media_type=media_type, headers=headers)


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.submitted_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        submitted, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return str(submitted), str(job_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this service returned") from exc


@router.get("", response_model=JobList)
async def list_jobs(
    request: Request,
    limit: int = Query(50, ge=1, le=200),
    status: JobStatus | None = Query(None),
    cursor: str | None = Query(None, max_length=500),
) -> JobList:
    """Newest first; pass `next_cursor` back as `cursor` for the next page."""
    before = _decode_cursor(cursor) if cursor else None
    jobs = await request.app.state.store.list(status, limit + 1, before)
    page = jobs[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(jobs) > limit else None
    return JobList(jobs=[JobView.of(j) for j in page], next_cursor=next_cursor)


@router.delete("/{job_id}", response_model=JobView, responses={204: {"description": "finished job deleted"}})
async def delete_job(request: Request, job_id: str) -> Response:
    """A queued or running job is cancelled (200); a finished one is deleted with its audio (204)."""
    state = request.app.state
    for _ in range(3):  # the job may move on between the read and the update
        job = await _job_or_404(request, job_id)
        if job.status.terminal:
            await state.store.delete(job_id)
            return Response(status_code=204)
        try:
            if await state.store.transition(job, JobStatus.CANCELLED):
                state.dispatcher.cancel(job_id)
                return _job_response(await _job_or_404(request, job_id), 200)
        except InvalidTransition:
            continue
    raise ApiError(409, "conflict", "the job changed while being cancelled; try again")
