"""OpenAI-compatible audio API: `POST /v1/audio/transcriptions` and `/v1/audio/translations`.

The official `openai` client works unchanged with `base_url` pointed here. Each request is a regular job
(durable, visible under /v1/jobs, `x-job-id` header) that the request waits for, up to `openai_max_wait_s`.
A request still waiting after `openai_keepalive_s` gets its 200 and headers then, and keep-alive whitespace
until the body: SPCS ingress closes connections idle for 90 s (keepalive.py has the framing per format and
the documentation link). Past `openai_max_wait_s` the answer is the job link, never a lost job: 202 with
`Location` while no header was sent, else an error object in the body. A client that goes away does not stop
the job; a retry with the same `Idempotency-Key` header waits on the same job instead of adding one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from service import audio
from service.api import keepalive
from service.api.admission import accept
from service.api.errors import ApiError, request_id_var
from service.api.intake import JobOptions, multipart, multipart_body, validated
from service.api.schemas import JobView
from service.formats import FORMATS, render, to_verbose_json
from service.jobs.model import Job, JobStatus
from service.languages import language_name

log = logging.getLogger("spcs_whisper.api")
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
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the transcript; a request that waited `openai_keepalive_s` gets it after keep-alive "
        "whitespace, or an error object if the job then fails (see the README)"
    },
    202: {"description": "still running after `openai_max_wait_s`, no keep-alive begun: the job, `Location` its URL"},
}
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


async def _wait(state: Any, job_id: str, timeout: float) -> Job:
    """The finished job; TimeoutError while it runs."""
    try:
        return await state.dispatcher.wait_finished(job_id, timeout)
    except KeyError:
        raise ApiError(404, "job_not_found", f"job {job_id} was deleted while the request waited") from None


async def _result(state: Any, job: Job, form: OpenAIForm, words: bool) -> str:
    """The finished job's body in the requested format; ApiError when it did not succeed."""
    if job.status == JobStatus.FAILED:
        status = AUDIO_ERROR_STATUS.get(job.error_code or "", 503)
        raise ApiError(status, job.error_code or "failed", job.error_message or "transcription failed", job_id=job.id)
    if job.status != JobStatus.SUCCEEDED:
        raise ApiError(409, "job_cancelled", f"job {job.id} was {job.status.value}", job_id=job.id)
    transcript = await state.store.transcript(job.id)
    if form.response_format == "json":
        return json.dumps({"text": transcript.get("text", "")}, ensure_ascii=False)
    if form.response_format == "verbose_json":
        return json.dumps(_verbose(transcript, job, words), ensure_ascii=False)
    return render(transcript, form.response_format, job.task)[0]


def _links(job_id: str, fmt: str) -> dict[str, str]:
    return {"job": f"/v1/jobs/{job_id}", "transcript": f"/v1/jobs/{job_id}/transcript?format={fmt}"}


def _still_running(job_id: str, fmt: str) -> ApiError:
    message = f"job {job_id} is still running; read it at /v1/jobs/{job_id}"
    return ApiError(202, "job_still_running", message, job_id=job_id, links=_links(job_id, fmt))


async def _kept_alive(state: Any, job_id: str, form: OpenAIForm, words: bool, deadline: float) -> AsyncIterator[str]:
    """The streamed body: the format's opening, a keep-alive every `openai_keepalive_s`, then the result or,
    as the 200 is already sent, an error object (see keepalive.py)."""
    fmt, every = form.response_format, state.settings.openai_keepalive_s
    loop = asyncio.get_running_loop()
    yield keepalive.opening(fmt)
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _still_running(job_id, fmt)
            try:
                job = await _wait(state, job_id, min(every, remaining))
                break
            except TimeoutError:
                yield keepalive.KEEPALIVE
        body = keepalive.remainder(fmt, await _result(state, job, form, words))
    except ApiError as exc:
        details = {"job_id": job_id, **exc.details, "request_id": request_id_var.get()}
        yield keepalive.error_tail(fmt, keepalive.error_object(exc.status, exc.code, exc.message, **details))
        return
    except Exception:  # the store, say: the status is sent, so the body says what went wrong
        log.exception("OpenAI-compatible request for job %s failed after its headers", job_id)
        message = f"the result could not be read; the job is at /v1/jobs/{job_id}"
        error = keepalive.error_object(
            500, "internal_error", message, job_id=job_id, links=_links(job_id, fmt), request_id=request_id_var.get()
        )
        yield keepalive.error_tail(fmt, error)
        return
    yield body


async def _run(request: Request, task: Literal["transcribe", "translate"]) -> Response:
    state = request.app.state
    settings = state.settings
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
                "idempotency_key": request.headers.get("idempotency-key"),
            },
        )
        job, replayed = await accept(request, upload, options)
    headers = {"x-job-id": job.id}
    if replayed:
        headers["idempotent-replayed"] = "true"
    fmt, every, longest = form.response_format, settings.openai_keepalive_s, settings.openai_max_wait_s
    streams = 0 < every < longest  # else the request waits `longest` quietly (keep-alive off or pointless)
    deadline = asyncio.get_running_loop().time() + longest
    try:
        finished = await _wait(state, job.id, every if streams else longest)
    except TimeoutError:
        if not streams:  # the job link, as the POST /v1/jobs answer: it keeps running
            current = await state.store.get(job.id) or job
            body = JobView.of(current).model_dump(mode="json")
            headers["location"] = f"/v1/jobs/{job.id}"
            return JSONResponse(body, status_code=202, headers=headers)
        # Headers now, then bytes every `every` seconds: SPCS ingress ends a connection idle for 90 s
        # (https://docs.snowflake.com/en/developer-guide/snowpark-container-services/service-network-communications).
        body_stream = _kept_alive(state, job.id, form, options.word_timestamps, deadline)
        return StreamingResponse(body_stream, media_type=FORMATS[fmt], headers=headers)
    body = await _result(state, finished, form, options.word_timestamps)
    return Response(body, media_type=FORMATS[fmt], headers=headers)


@router.post("/transcriptions", openapi_extra=FORM_SCHEMA, responses=RESPONSES)
async def transcriptions(request: Request) -> Response:
    """Transcribe audio in its own language (OpenAI `audio.transcriptions.create`)."""
    return await _run(request, "transcribe")


@router.post("/translations", openapi_extra=FORM_SCHEMA, responses=RESPONSES)
async def translations(request: Request) -> Response:
    """Speech in any language to English text (OpenAI `audio.translations.create`)."""
    return await _run(request, "translate")
