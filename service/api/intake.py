"""Accepting work: read the multipart form, validate options, store the upload and the job durably.

Shared by the job API and the OpenAI-compatible API, so both enforce the same limits and checks.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile

from service.api.errors import ApiError
from service.api.uploads import receive_upload
from service.jobs.model import Job, new_job_id
from service.languages import normalise_language
from service.storage.base import DuplicateIdempotencyKey

MAX_FIELD_BYTES = 64 * 1024


def multipart_body(required: list[str], properties: dict[str, dict]) -> dict[str, Any]:
    """OpenAPI `openapi_extra` for a route that reads its multipart form itself (with an audio `file`)."""
    schema = {"type": "object", "required": required, "properties": {"file": {"type": "string", "format": "binary"}}}
    schema["properties"].update(properties)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


class JobOptions(BaseModel):
    """What a job asks of the model; unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    model: str | None = None
    prompt: str | None = Field(None, max_length=2000, description="text that primes Whisper's vocabulary")
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return normalise_language(value)


def validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """`model(**fields)`, with pydantic's complaints turned into one 422 error body."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "form", "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise ApiError(422, "validation_error", f"invalid form fields: {summary}", fields=problems) from None


@asynccontextmanager
async def multipart(request: Request) -> AsyncIterator[tuple[UploadFile, dict[str, str | list[str]]]]:
    """The `file` part and the other fields (repeated fields become lists) of a multipart request."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media", "send multipart/form-data with the audio in a `file` part")
    async with request.form(max_files=1, max_fields=32, max_part_size=MAX_FIELD_BYTES) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "the form has no `file` part holding the audio")
        fields: dict[str, str | list[str]] = {}
        for key, value in form.multi_items():
            if key == "file" or not isinstance(value, str):
                continue
            if key.endswith("[]"):
                fields.setdefault(key[:-2], []).append(value)  # type: ignore[union-attr]
            else:
                fields[key] = value
        yield upload, fields


def _check_model(options: JobOptions, info: dict | None, configured: str) -> str:
    """The model that will run the job; refuses what it cannot do (English-only model, other model)."""
    served = (info or {}).get("model", configured)
    if options.model not in (None, "", served, "whisper-1"):
        raise ApiError(422, "unsupported_model", f"this service runs model {served!r}, not {options.model!r}")
    english_only = bool(info) and not info.get("multilingual", True)
    if english_only and (options.language not in (None, "en") or options.task == "translate"):
        raise ApiError(422, "unsupported_language", f"model {served!r} is English-only")
    return served


async def _check_backlog(state: Any) -> None:
    """429 with Retry-After once the backlog reaches its bound: back-pressure, never a 5xx."""
    active = await state.store.count_active()
    if active >= state.settings.max_queued_jobs:
        raise ApiError(429, "queue_full", f"{active} jobs are waiting; retry later", retry_after=30, queued=active)


async def accept(request: Request, upload: UploadFile, options: JobOptions) -> tuple[Job, bool]:
    """Store the upload and the job; returns (job, replayed) where `replayed` means the idempotency key
    named an existing job, which is returned instead of a new one."""
    state = request.app.state
    if options.idempotency_key:
        existing = await state.store.find_by_idempotency_key(options.idempotency_key)
        if existing:
            return existing, True
    model = _check_model(options, state.dispatcher.model_info, state.settings.model)
    await _check_backlog(state)
    path = state.store.incoming_path(uuid.uuid4().hex)
    size, info = await receive_upload(upload, path, state.settings)
    job = Job(
        id=new_job_id(),
        source=(upload.filename or "upload")[:500],
        language=options.language,
        task=options.task,
        word_timestamps=options.word_timestamps,
        prompt=options.prompt,
        temperature=options.temperature,
        model=model,
        audio_seconds=info.duration,
        bytes=size,
        idempotency_key=options.idempotency_key,
    )
    try:
        job = await state.store.add(job, path)
    except DuplicateIdempotencyKey as dup:
        path.unlink(missing_ok=True)
        return dup.job, True
    state.dispatcher.wake()
    return job, False
