"""What clients send: the multipart form or JSON body of a job, validated into options (one 422 shape).

Shared by the job, batch, function and OpenAI-compatible routes; `admission.py` then stores the job.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile

from service.api.errors import ApiError
from service.languages import normalise_language

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
    translate_to: str | None = Field(None, description="translate the transcript into this language afterwards")

    @field_validator("language", "translate_to")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return normalise_language(value)


class SourceJob(JobOptions):
    """`POST /v1/jobs` as JSON: the audio is a file on a stage instead of an upload."""

    source: str = Field(
        ..., min_length=2, max_length=2048, examples=["@AUDIO_FILES_STAGE/calls/a.mp4", "https://host/a.mp3"]
    )


class BatchRequest(JobOptions):
    """`POST /v1/batches`: one job per file under `stage` whose relative path fully matches `pattern`."""

    stage: str = Field(..., min_length=2, max_length=1200, examples=["@AUDIO_FILES_STAGE"])
    pattern: str = Field(".*", max_length=500, examples=[".*[.]mp4"])


async def json_fields(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (400 when it is not JSON, 422 when it is not an object)."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "the body must be a JSON object")
    return body


def validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """`model(**fields)`, with pydantic's complaints turned into one 422 error body."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "form", "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise ApiError(422, "validation_error", f"invalid fields: {summary}", fields=problems) from None


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
