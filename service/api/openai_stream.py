"""Streamed answers of the OpenAI-compatible routes: `stream=true` as server-sent events, and the response class
that tells the retry bookkeeping (openai_retries.py) whether a streamed body reached its end.

`stream=true` answers `text/event-stream` at once (headers with `x-job-id`), then, as the job's segments
become final in audio order (the Ray app sends them so; the dispatcher keeps them in `partial`), one
`data: {"type": "transcript.text.delta", "delta": ...}` per segment, and at the end
`data: {"type": "transcript.text.done", "text", "usage"}`, as OpenAI's transcription streaming events. The deltas
concatenated are the final text (Whisper's leading space kept between segments, dropped before the first).
With `response_format=diarized_json` (OpenAI's `gpt-4o-transcribe-diarize` streaming) there are no deltas but one
`data: {"type": "transcript.text.segment", "id", "start", "end", "text", "speaker"}` per segment, then the
done event: speakers are known once the whole file is diarized (and segments are split where the speaker
changes), so the segment events all come when the job has finished. For the same reason a job that asked for
speakers (the `speakers` field) sends its deltas when it has finished, from the final segments.
A job that fails, is cancelled or outlives `openai_max_wait_s` ends the stream with
`data: {"type": "error", "error": {...}}` (OpenAI's error object; the official client raises `APIError`). While
nothing else is sent, an SSE comment line every `openai_keepalive_s` keeps SPCS ingress (90 s idle) from
closing the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service import audio
from service.api import keepalive
from service.api.errors import ApiError, request_id_var
from service.api.openai_formats import DiarizedSegment, usage
from service.jobs.model import Job, JobStatus
from service.transcript import Segment, Transcript

if TYPE_CHECKING:
    from service.api.deps import Services

log = logging.getLogger(__name__)
EVENT_STREAM = "text/event-stream"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
SSE_KEEPALIVE = ": keep-alive\n\n"
QUIET_POLL_S = 5.0  # with keep-alive off: how often a quiet stream re-reads its job
AUDIO_ERROR_STATUS = {
    cls.code: cls.status
    for cls in (audio.EmptyAudio, audio.UnsupportedMedia, audio.NoAudioTrack, audio.CorruptAudio, audio.AudioTooLong)
}


def links(job_id: str, fmt: str) -> dict[str, str]:
    return {"job": f"/v1/jobs/{job_id}", "transcript": f"/v1/jobs/{job_id}/transcript?format={fmt}"}


def still_running(job_id: str, fmt: str) -> ApiError:
    message = f"job {job_id} is still running; read it at /v1/jobs/{job_id}"
    return ApiError(202, "job_still_running", message, job_id=job_id, links=links(job_id, fmt))


def failure(job: Job) -> ApiError | None:
    """Why a finished job has no transcript to answer with; None when it succeeded."""
    if job.status == JobStatus.SUCCEEDED:
        return None
    if job.status == JobStatus.FAILED:
        status = AUDIO_ERROR_STATUS.get(job.error_code or "", 503)
        return ApiError(status, job.error_code or "failed", job.error_message or "transcription failed", job_id=job.id)
    return ApiError(409, "job_cancelled", f"job {job.id} was {job.status.value}", job_id=job.id)


def error_details(exc: ApiError, job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, **exc.details, "request_id": request_id_var.get()}


class AttachedStream(StreamingResponse):
    """A streamed body that reports, once it is over, whether it was sent to its end: `on_end(abandoned)`, with
    `abandoned` True when the client went away first (the response was cancelled or its writes failed)."""

    def __init__(self, body: AsyncIterator[str], on_end: Callable[[bool], None], **kwargs: Any) -> None:
        self.finished = False
        self._on_end = on_end
        super().__init__(self._tracked(body), **kwargs)

    async def _tracked(self, body: AsyncIterator[str]) -> AsyncIterator[str]:
        async for chunk in body:
            yield chunk
        self.finished = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end(not self.finished)


def sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


class _Deltas:
    """Segments to delta events: the first drops Whisper's leading space, so the deltas join to the text."""

    def __init__(self) -> None:
        self.sent = 0  # segments consumed, in audio order
        self.started = False

    def take(self, segments: list[Segment]) -> list[str]:
        events = []
        for segment in segments[self.sent :]:
            self.sent += 1
            text = segment.text
            if not self.started:
                text = text.lstrip()
            if text:
                self.started = True
                events.append(sse({"type": "transcript.text.delta", "delta": text}))
        return events


def segment_events(transcript: Transcript) -> list[str]:
    """`transcript.text.segment` events of a diarized transcript (ids as its diarized_json's; no empty text)."""
    return [
        sse(DiarizedSegment.of(i, segment).model_dump())
        for i, segment in enumerate(transcript.segments)
        if segment.text.strip()
    ]


async def events(services: Services, job_id: str, deadline: float, diarized: bool = False) -> AsyncIterator[str]:
    """The event stream of one job (see the module's docstring); `diarized`: segment events instead of deltas."""
    dispatcher, store, every = services.dispatcher, services.store, services.settings.gateway.openai_keepalive_s
    loop = asyncio.get_running_loop()
    deltas = _Deltas()
    quiet_since = loop.time()
    try:
        while True:
            job = await store.get(job_id)
            if job is None:
                raise ApiError(404, "job_not_found", f"job {job_id} was deleted while the request waited")
            if job.status.terminal:
                break
            # A retried attempt starts `partial` over: what was sent is not sent again. Diarized segments are only
            # final at the end (split where the speaker changes).
            live = not diarized and job.options.speakers is None
            for event in deltas.take(dispatcher.partial.get(job_id) or []) if live else []:
                yield event
                quiet_since = loop.time()
            now = loop.time()
            if deadline - now <= 0:
                raise still_running(job_id, "json")
            if every > 0 and now - quiet_since >= every:
                yield SSE_KEEPALIVE
                quiet_since = now
            pause = (quiet_since + every - now) if every > 0 else QUIET_POLL_S
            await dispatcher.wait_progress(job_id, max(0.01, min(pause, deadline - now)))
        if problem := failure(job):
            raise problem
        transcript = await store.transcript(job_id) or Transcript()
        for event in segment_events(transcript) if diarized else deltas.take(transcript.segments):
            yield event
        yield sse({"type": "transcript.text.done", "text": transcript.text, "usage": usage(transcript)})
    except ApiError as exc:
        error = keepalive.error_object(exc.status, exc.code, exc.message, **error_details(exc, job_id))
        yield sse({"type": "error", **error})
    except Exception:  # the store, say: the status is sent, so the stream says what went wrong
        log.exception("OpenAI-compatible stream of job %s failed", job_id)
        message = f"the result could not be read; the job is at /v1/jobs/{job_id}"
        details = {"job_id": job_id, "links": links(job_id, "json"), "request_id": request_id_var.get()}
        yield sse({"type": "error", **keepalive.error_object(500, "internal_error", message, **details)})
