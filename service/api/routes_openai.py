"""OpenAI-compatible audio API: `POST /v1/audio/transcriptions` and `/v1/audio/translations`.

The official `openai` client works unchanged with `base_url` pointed here. Each request is a regular job
(durable, visible under /v1/jobs, `x-job-id` header) that the request waits for.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from service import audio
from service.api.admission import accept
from service.api.errors import ApiError
from service.api.intake import JobOptions, multipart, multipart_body, validated
from service.formats import render, to_verbose_json
from service.jobs.model import Job, JobStatus
from service.languages import language_name

router = APIRouter(prefix="/v1/audio", tags=["openai"])

FORM_SCHEMA = multipart_body(
    ["file", "model"],
    {
        "model": {"type": "string", "example": "whisper-1"},
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {"type": "string", "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
    },
)
AUDIO_ERROR_STATUS = {
    cls.code: cls.status
    for cls in (audio.EmptyAudio, audio.UnsupportedMedia, audio.NoAudioTrack, audio.CorruptAudio, audio.AudioTooLong)
}


class OpenAIForm(BaseModel):
    """OpenAI's form fields, named and typed as its API documents them."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1)
    language: str | None = None
    prompt: str | None = Field(None, max_length=2000)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=lambda: ["segment"])


def _verbose(transcript: dict[str, Any], job: Job, words: bool) -> dict[str, Any]:
    body = to_verbose_json(transcript, job.task)
    body["language"] = language_name(transcript.get("language"))
    for segment in body["segments"]:
        segment.setdefault("seek", int(segment["start"] * 100))
        segment.setdefault("tokens", [])
        segment.setdefault("temperature", job.temperature)
        segment.setdefault("avg_logprob", 0.0)
        segment.setdefault("compression_ratio", 0.0)
        segment.setdefault("no_speech_prob", 0.0)
        segment.pop("words", None)
    if words:
        body["words"] = [
            {"word": w["word"].strip(), "start": w["start"], "end": w["end"]} for w in body.get("words", [])
        ]
    else:
        body.pop("words", None)
    return body


async def _run(request: Request, task: Literal["transcribe", "translate"]) -> Response:
    state = request.app.state
    async with multipart(request) as (upload, fields):
        form: OpenAIForm = validated(OpenAIForm, fields)
        options: JobOptions = validated(
            JobOptions,
            {
                "language": form.language,
                "task": task,
                "word_timestamps": "word" in form.timestamp_granularities,
                "model": form.model,
                "prompt": form.prompt,
                "temperature": form.temperature,
            },
        )
        job, _ = await accept(request, upload, options)
    try:
        job = await state.dispatcher.wait_finished(job.id, state.settings.request_timeout_s)
    except TimeoutError:
        message = f"job {job.id} is still running; read it at /v1/jobs/{job.id}"
        raise ApiError(503, "timeout", message, job_id=job.id) from None
    headers = {"x-job-id": job.id}
    if job.status == JobStatus.FAILED:
        status = AUDIO_ERROR_STATUS.get(job.error_code or "", 503)
        raise ApiError(status, job.error_code or "failed", job.error_message or "transcription failed", job_id=job.id)
    if job.status != JobStatus.SUCCEEDED:
        raise ApiError(409, "job_cancelled", f"job {job.id} was {job.status.value}", job_id=job.id)
    transcript = await state.store.transcript(job.id)
    if form.response_format == "json":
        body, media_type = json.dumps({"text": transcript.get("text", "")}, ensure_ascii=False), "application/json"
    elif form.response_format == "verbose_json":
        verbose = _verbose(transcript, job, options.word_timestamps)
        body, media_type = json.dumps(verbose, ensure_ascii=False), "application/json"
    else:
        body, media_type = render(transcript, form.response_format, job.task)
    return Response(body, media_type=media_type, headers=headers)


@router.post("/transcriptions", openapi_extra=FORM_SCHEMA)
async def transcriptions(request: Request) -> Response:
    """Transcribe audio in its own language (OpenAI `audio.transcriptions.create`)."""
    return await _run(request, "transcribe")


@router.post("/translations", openapi_extra=FORM_SCHEMA)
async def translations(request: Request) -> Response:
    """Speech in any language to English text (OpenAI `audio.translations.create`)."""
    return await _run(request, "translate")
