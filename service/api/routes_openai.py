"""OpenAI-compatible audio API: `POST /v1/audio/transcriptions` and `/v1/audio/translations`.

The official `openai` client works unchanged with `base_url` pointed here. Each request is a regular job
(durable, visible under /v1/jobs, `x-job-id` header) that the request waits for, up to `openai_max_wait_s`.

- Fields: every documented one of OpenAI's API (file, model, language, prompt, response_format, temperature,
  timestamp_granularities[], stream, include[], chunking_strategy, known_speaker_names[],
  known_speaker_references[], and the newer keywords[] and languages[]), and the extras of other Whisper servers
  (`hotwords`, `vad_filter`, `vad_parameters`). Unknown fields are ignored and their names logged. Objects
  (chunking_strategy, vad_parameters) come as JSON text or as the client's `name[key]` fields.
- Speakers: `response_format=diarized_json` (OpenAI's `gpt-4o-transcribe-diarize` shape, openai_formats.py)
  turns diarization on with an automatic count; the `speakers` field (JobOptions' values: true, 3, 2-4) turns
  it on for any format (verbose_json, srt, vtt and text then carry the labels). Transcriptions only: a
  translation answers 400 to `diarized_json`.
- Errors: OpenAI's envelope and statuses (openai_errors.py): a bad file or parameter is 400.
- A request still waiting after `openai_keepalive_s` gets its 200 and headers then, and keep-alive whitespace
  until the body: SPCS ingress closes connections idle for 90 s (keepalive.py has the framing per format and the
  documentation link). Past `openai_max_wait_s` the answer is the job link, never a lost job: 202 with `Location`
  while no header was sent, else an error object in the body.
- `stream=true`: server-sent events as the segments become final (openai_stream.py).
- Retries: a request without `Idempotency-Key` gets an implicit one, so the official client's retry of a timed-out
  upload waits on the first job; a job whose client went away is cancelled after a grace period unless a retry
  attached or the client asked to keep it (openai_retries.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.api import keepalive, openai_stream
from service.api.admission import accept
from service.api.deps import CallerDep, Services, ServicesDep
from service.api.errors import ApiError, request_id_var
from service.api.intake import JobRequest, multipart, multipart_body, validated
from service.api.openai_formats import DiarizedTranscription, usage, verbose
from service.api.openai_retries import file_digest, implicit_key, keeps_job
from service.api.openai_stream import AttachedStream, error_details, failure, links, still_running
from service.api.schemas import JobView
from service.formats import FORMATS, render
from service.jobs.model import Job
from service.options import MAX_SPEAKERS, SpeakerCount, Speakers, Task
from service.transcript import Transcript

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/audio", tags=["openai"])

FORM_SCHEMA = multipart_body(
    ["file", "model"],
    {
        "model": {"type": "string", "example": "whisper-1"},
        "language": {"type": "string"},
        "prompt": {"type": "string", "maxLength": 16000, "description": "its last 223 tokens are used"},
        "response_format": {
            "type": "string",
            "enum": ["json", "text", "srt", "verbose_json", "vtt", "diarized_json"],
            "description": "diarized_json: segments with a `speaker` each (turns `speakers` on); transcriptions only",
        },
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
        "stream": {
            "type": "boolean",
            "description": "server-sent events: transcript.text.delta (diarized_json: .segment), then .done",
        },
        "include[]": {"type": "array", "items": {"type": "string"}, "description": "accepted; logprobs unavailable"},
        "chunking_strategy": {
            "type": "string",
            "description": '"auto", or JSON {"type": "server_vad", "threshold", "prefix_padding_ms", '
            '"silence_duration_ms"}: the VAD cut\'s settings',
        },
        "known_speaker_names[]": {"type": "array", "items": {"type": "string"}, "description": "accepted, unused"},
        "known_speaker_references[]": {"type": "array", "items": {"type": "string"}, "description": "accepted, unused"},
        "speakers": {
            "type": "string",
            "description": f"label who spoke when: true/auto, a count (3) or min-max (2-4), at most {MAX_SPEAKERS}",
        },
        "hotwords": {"type": "string", "maxLength": 1000},
        "vad_filter": {"type": "boolean"},
        "vad_parameters": {
            "type": "string",
            "description": 'JSON {"threshold", "min_silence_duration_ms", "speech_pad_ms"}',
        },
    },
)
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the transcript; a request that waited `openai_keepalive_s` gets it after keep-alive "
        "whitespace, or an error object if the job then fails (see the README); `stream=true`: server-sent events",
        "content": {openai_stream.EVENT_STREAM: {}},
    },
    202: {"description": "still running after `openai_max_wait_s`, no keep-alive begun: the job, `Location` its URL"},
    400: {"description": "a bad file or parameter, in OpenAI's error envelope"},
}
NESTED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,63})\[([A-Za-z_][A-Za-z0-9_]{0,63})\]$")
LIST_FIELDS = (
    "timestamp_granularities",
    "include",
    "known_speaker_names",
    "known_speaker_references",
    "keywords",
    "languages",
)
Granularity = Literal["word", "segment"]
ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
DIARIZED = "diarized_json"
MEDIA_TYPES = {**FORMATS, DIARIZED: "application/json"}


def _segment_granularity() -> list[Granularity]:
    return ["segment"]


class ServerVad(BaseModel):
    """OpenAI's `chunking_strategy` object: the VAD that cuts the audio, with its settings."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["server_vad"]
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=2000)
    silence_duration_ms: int | None = Field(None, ge=0, le=10_000)


class VadParameters(BaseModel):
    """faster-whisper's `vad_parameters` (as speaches and faster-whisper-server take them); others ignored."""

    model_config = ConfigDict(extra="ignore")

    threshold: float | None = Field(None, ge=0.0, le=1.0)
    min_silence_duration_ms: int | None = Field(None, ge=0, le=10_000)
    speech_pad_ms: int | None = Field(None, ge=0, le=2000)


class OpenAIForm(BaseModel):
    """OpenAI's form fields, named and typed as its API documents them, and the peers' extras; others ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1)
    language: str | None = None
    prompt: str | None = Field(None, max_length=16_000)
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Granularity] = Field(default_factory=_segment_granularity)
    stream: bool = False
    include: list[str] = Field(default_factory=list)  # logprobs: accepted, not available from this service
    chunking_strategy: Literal["auto"] | ServerVad | None = None
    known_speaker_names: list[str] = Field(default_factory=list)  # accepted, unused: speakers are SPEAKER_00, ...
    known_speaker_references: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)  # words to guide decoding: the hotwords unless those are set
    languages: list[str] = Field(default_factory=list)  # one: the language, unless `language` is set
    speakers: Speakers = None  # diarization (an extra of this service; diarized_json turns it on)
    hotwords: str | None = Field(None, max_length=1000)
    vad_filter: bool | None = None
    vad_parameters: VadParameters | None = None


def _object_field(name: str, value: Any, model: type[BaseModel]) -> Any:
    """An object field as JSON text (curl) or as `name[key]` fields (the official client), validated as `model`;
    `chunking_strategy` may also be "auto". Errors name the field as `name.key`."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if name == "chunking_strategy" and text == "auto":
            return text
        try:
            value = json.loads(text)
        except ValueError:
            expected = '"auto" or a JSON object' if name == "chunking_strategy" else "a JSON object"
            raise ApiError(400, "invalid_parameter", f"`{name}` must be {expected}", param=name) from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_parameter", f"`{name}` must be an object", param=name)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = [{"field": ".".join([name, *(str(p) for p in e["loc"])]), "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise ApiError(422, "validation_error", f"invalid fields: {summary}", fields=problems) from None


def _grouped(fields: dict[str, str | list[str]]) -> dict[str, Any]:
    """The form's fields with `name[key]` parts gathered into objects and single values of list fields listed."""
    grouped: dict[str, Any] = {}
    for key, value in fields.items():
        if match := NESTED.match(key):
            target = grouped.setdefault(match[1], {})
            if isinstance(target, dict):
                target[match[2]] = value
        elif not isinstance(grouped.get(key), dict):
            grouped[key] = value
    for name in LIST_FIELDS:
        if isinstance(grouped.get(name), str):
            grouped[name] = [grouped[name]]
    for name, model in (("chunking_strategy", ServerVad), ("vad_parameters", VadParameters)):
        if name in grouped:
            grouped[name] = _object_field(name, grouped[name], model)
    return grouped


def _form(fields: dict[str, str | list[str]]) -> OpenAIForm:
    grouped = _grouped(fields)
    unknown = sorted(set(grouped) - set(OpenAIForm.model_fields))
    if unknown:
        log.info("OpenAI-compatible request: unknown fields ignored: %s", ", ".join(repr(n[:64]) for n in unknown[:20]))
    return validated(OpenAIForm, grouped)


def _vad_options(form: OpenAIForm) -> dict[str, Any]:
    """chunking_strategy (`server_vad`: threshold, prefix_padding_ms, silence_duration_ms) and the peers'
    vad_filter / vad_parameters, as the job's VAD options; "auto" is the service's own VAD."""
    options: dict[str, Any] = {}
    strategy = form.chunking_strategy
    if isinstance(strategy, ServerVad):
        options["vad_filter"] = True
        options["vad_threshold"] = strategy.threshold
        options["vad_speech_pad_ms"] = strategy.prefix_padding_ms
        options["vad_min_silence_ms"] = strategy.silence_duration_ms
    if form.vad_filter is not None:
        options["vad_filter"] = form.vad_filter
    if parameters := form.vad_parameters:
        for name, value in (
            ("vad_threshold", parameters.threshold),
            ("vad_min_silence_ms", parameters.min_silence_duration_ms),
            ("vad_speech_pad_ms", parameters.speech_pad_ms),
        ):
            if value is not None:
                options[name] = value
    return {name: value for name, value in options.items() if value is not None}


def _speakers(form: OpenAIForm, task: Task) -> SpeakerCount | None:
    """The job's speaker count: the `speakers` field, else an automatic count for diarized_json."""
    if form.response_format == DIARIZED:
        if task == "translate":
            message = "response_format `diarized_json` is for transcriptions; translations answer json, text, srt, "
            raise ApiError(400, "invalid_parameter", message + "verbose_json or vtt", param="response_format")
        return form.speakers or SpeakerCount()
    return form.speakers


def _framing(fmt: str) -> str:
    """The format whose keep-alive framing and links a response format uses (diarized_json is JSON)."""
    return "json" if fmt == DIARIZED else fmt


def _options(form: OpenAIForm, task: Task, key: str | None) -> JobRequest:
    language = form.language or (form.languages[0] if len(form.languages) == 1 else None)
    keywords = ", ".join(k.strip() for k in form.keywords if k.strip())
    return validated(
        JobRequest,
        {
            "language": language,
            "task": task,
            "word_timestamps": "word" in form.timestamp_granularities,
            "model": form.model,
            "prompt": form.prompt,
            "temperature": form.temperature,
            "hotwords": form.hotwords or keywords[:1000] or None,
            **_vad_options(form),
            "speakers": _speakers(form, task),
            "idempotency_key": key,
        },
    )


async def _wait(services: Services, job_id: str, timeout: float) -> Job:
    """The finished job; TimeoutError while it runs."""
    try:
        return await services.dispatcher.wait_finished(job_id, timeout)
    except KeyError:
        raise ApiError(404, "job_not_found", f"job {job_id} was deleted while the request waited") from None


async def _result(services: Services, job: Job, form: OpenAIForm, words: bool) -> str:
    """The finished job's body in the requested format; ApiError when it did not succeed."""
    if problem := failure(job):
        raise problem
    transcript = await services.store.transcript(job.id) or Transcript()
    if form.response_format == "json":
        return json.dumps({"text": transcript.text, "usage": usage(transcript)}, ensure_ascii=False)
    if form.response_format == "verbose_json":
        return json.dumps(verbose(transcript, job, words), ensure_ascii=False)
    if form.response_format == DIARIZED:
        return DiarizedTranscription.of(transcript).model_dump_json()
    return render(transcript, form.response_format, job.options.task)[0]


async def _kept_alive(
    services: Services, job_id: str, form: OpenAIForm, words: bool, deadline: float
) -> AsyncIterator[str]:
    """The streamed body: the format's opening, a keep-alive every `openai_keepalive_s`, then the result or,
    as the 200 is already sent, an error object (see keepalive.py)."""
    fmt, every = _framing(form.response_format), services.settings.gateway.openai_keepalive_s
    loop = asyncio.get_running_loop()
    yield keepalive.opening(fmt)
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise still_running(job_id, fmt)
            try:
                job = await _wait(services, job_id, min(every, remaining))
                break
            except TimeoutError:
                yield keepalive.KEEPALIVE
        body = keepalive.remainder(fmt, await _result(services, job, form, words))
    except ApiError as exc:
        yield keepalive.error_tail(
            fmt, keepalive.error_object(exc.status, exc.code, exc.message, **error_details(exc, job_id))
        )
        return
    except Exception:  # the store, say: the status is sent, so the body says what went wrong
        log.exception("OpenAI-compatible request for job %s failed after its headers", job_id)
        message = f"the result could not be read; the job is at /v1/jobs/{job_id}"
        error = keepalive.error_object(
            500, "internal_error", message, job_id=job_id, links=links(job_id, fmt), request_id=request_id_var.get()
        )
        yield keepalive.error_tail(fmt, error)
        return
    yield body


async def _client_left(request: Request) -> None:
    """Returns once the client has closed the connection (the ASGI receive channel says `http.disconnect`)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait_or_leave(request: Request, services: Services, job_id: str, timeout: float) -> Job | None:
    """The finished job; None when the client went away first; TimeoutError while it runs."""
    waiting = asyncio.ensure_future(_wait(services, job_id, timeout))
    leaving = asyncio.ensure_future(_client_left(request))
    try:
        await asyncio.wait({waiting, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, leaving):
            task.cancel()
        await asyncio.gather(waiting, leaving, return_exceptions=True)
    if waiting.done() and not waiting.cancelled():
        return waiting.result()  # the job, or TimeoutError / ApiError
    return None


async def _submit(
    request: Request, services: Services, owner: str | None, task: Task
) -> tuple[Job, bool, OpenAIForm, bool]:
    """(job, replayed, form, word timestamps): the request's job, new or the one its idempotency key names."""
    explicit = request.headers.get("idempotency-key")
    async with multipart(request) as (upload, fields):
        form = _form(fields)
        options = _options(form, task, explicit)
        if not explicit:
            digest = await file_digest(upload)
            key = await implicit_key(services.store, owner, digest, options)
            options = options.model_copy(update={"idempotency_key": key})
        job, replayed = await accept(services, upload, options, owner, origin="openai")
    if replayed:
        log.info(
            "OpenAI-compatible request replays job %s (retry %s)",
            job.id,
            request.headers.get("x-stainless-retry-count", "?")[:8],
        )
    return job, replayed, form, options.word_timestamps


async def _run(request: Request, services: Services, owner: str | None, task: Task) -> Response:
    settings = services.settings
    job, replayed, form, words = await _submit(request, services, owner, task)
    headers = {"x-job-id": job.id}
    if replayed:
        headers["idempotent-replayed"] = "true"
    fmt, every, longest = form.response_format, settings.gateway.openai_keepalive_s, settings.gateway.openai_max_wait_s
    deadline = asyncio.get_running_loop().time() + longest
    registry = services.attachments
    registry.attach(job.id, keeps_job(request.headers))
    handed_off = left = False

    def on_end(abandoned: bool) -> None:
        registry.detach(job.id, abandoned)

    try:
        if form.stream:
            handed_off = True
            body = openai_stream.events(services, job.id, deadline, diarized=fmt == DIARIZED)
            stream_headers = {**headers, **openai_stream.SSE_HEADERS}
            return AttachedStream(body, on_end, media_type=openai_stream.EVENT_STREAM, headers=stream_headers)
        streams = 0 < every < longest  # else the request waits `longest` quietly (keep-alive off or pointless)
        try:
            finished = await _wait_or_leave(request, services, job.id, every if streams else longest)
        except TimeoutError:
            if not streams:  # the job link, as the POST /v1/jobs answer: it keeps running
                current = await services.store.get(job.id) or job
                body_json = JobView.of(current).model_dump(mode="json")
                headers["location"] = f"/v1/jobs/{job.id}"
                return JSONResponse(body_json, status_code=202, headers=headers)
            # Headers now, then bytes every `every` seconds: SPCS ingress ends a connection idle for 90 s
            # (https://docs.snowflake.com/en/developer-guide/snowpark-container-services/service-network-communications).
            handed_off = True
            kept_alive = _kept_alive(services, job.id, form, words, deadline)
            return AttachedStream(kept_alive, on_end, media_type=MEDIA_TYPES[fmt], headers=headers)
        if finished is None:
            left = True
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        body_text = await _result(services, finished, form, words)
        return Response(body_text, media_type=MEDIA_TYPES[fmt], headers=headers)
    except asyncio.CancelledError:
        left = True
        raise
    finally:
        if not handed_off:
            registry.detach(job.id, left)


@router.post("/transcriptions", openapi_extra=FORM_SCHEMA, responses=RESPONSES)
async def transcriptions(request: Request, services: ServicesDep, who: CallerDep) -> Response:
    """Transcribe audio in its own language (OpenAI `audio.transcriptions.create`)."""
    return await _run(request, services, who.user, "transcribe")


@router.post("/translations", openapi_extra=FORM_SCHEMA, responses=RESPONSES)
async def translations(request: Request, services: ServicesDep, who: CallerDep) -> Response:
    """Speech in any language to English text (OpenAI `audio.translations.create`)."""
    return await _run(request, services, who.user, "translate")
