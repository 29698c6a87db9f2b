"""The job API: submit, read, list, fetch transcripts, cancel/delete."""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from service.api.admission import accept, accept_source
from service.api.callers import Caller
from service.api.deps import CallerDep, DispatcherDep, ServicesDep, StoreDep
from service.api.errors import ApiError
from service.api.intake import (
    JobRequest,
    SourceJob,
    form_fields,
    json_fields,
    multipart,
    multipart_body,
    validated,
)
from service.api.schemas import JobList, JobView, TranslationView
from service.api.uploads import container_of
from service.formats import FORMATS, render
from service.jobs.model import InvalidTransition, Job, JobStatus
from service.storage.base import JobStore
from service.storage.stages import StageAllowlist, parse_stage_ref
from service.transcript import Transcript, joined_text

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_WAIT_S = 60.0  # longest long poll: below common proxy idle timeouts
WAIT_DOC = "long poll: answer once the job has finished (succeeded, failed, cancelled) or after this many seconds"
WAITERS_RETRY_S = 5  # Retry-After of a long poll refused because too many are open

# The audio route answers with the type of the container PyAV found, never the client's file name: a file named
# `x.html` whose bytes hold `<script>` must not become a page on this origin (where the web page keeps the token).
# container (every demuxer of service.audio.ALLOWED_FORMATS) -> (type, extension, other types a file name may
# choose within that container).
AUDIO_TYPES: dict[str, tuple[str, str, frozenset[str]]] = {
    "wav": ("audio/wav", "wav", frozenset({"audio/x-wav", "audio/wave"})),
    "w64": ("audio/x-w64", "w64", frozenset()),
    "mp3": ("audio/mpeg", "mp3", frozenset()),
    "flac": ("audio/flac", "flac", frozenset({"audio/x-flac"})),
    "ogg": ("audio/ogg", "ogg", frozenset({"video/ogg", "audio/opus"})),
    "aac": ("audio/aac", "aac", frozenset()),
    "loas": ("audio/mp4a-latm", "latm", frozenset()),
    "dts": ("audio/vnd.dts", "dts", frozenset()),
    "ac3": ("audio/ac3", "ac3", frozenset()),
    "eac3": ("audio/eac3", "eac3", frozenset()),
    "aiff": ("audio/aiff", "aiff", frozenset({"audio/x-aiff"})),
    "caf": ("audio/x-caf", "caf", frozenset()),
    "amr": ("audio/amr", "amr", frozenset()),
    "amrnb": ("audio/amr", "amr", frozenset()),
    "amrwb": ("audio/amr-wb", "awb", frozenset()),
    "au": ("audio/basic", "au", frozenset()),
    "wv": ("audio/x-wavpack", "wv", frozenset()),
    "ape": ("audio/x-ape", "ape", frozenset()),
    "tta": ("audio/x-tta", "tta", frozenset()),
    "mov,mp4,m4a,3gp,3g2,mj2": (
        "video/mp4",
        "mp4",
        frozenset({"audio/mp4", "audio/x-m4a", "video/quicktime", "video/3gpp", "video/3gpp2", "audio/3gpp"}),
    ),
    "matroska,webm": ("video/webm", "webm", frozenset({"audio/webm", "video/x-matroska", "audio/x-matroska"})),
    "asf": ("video/x-ms-asf", "asf", frozenset({"audio/x-ms-wma", "video/x-ms-wmv"})),
    "avi": ("video/x-msvideo", "avi", frozenset()),
    "mpeg": ("video/mpeg", "mpg", frozenset({"audio/mpeg"})),
    "mpegts": ("video/mp2t", "ts", frozenset()),
    "flv": ("video/x-flv", "flv", frozenset()),
}
UNKNOWN_AUDIO = ("application/octet-stream", "bin")
AUDIO_HEADERS = {
    "x-content-type-options": "nosniff",  # no browser guesses HTML from the bytes
    "content-security-policy": "default-src 'none'; sandbox",  # and if one rendered it: no script, no origin
    "cache-control": "private, no-cache",
}

SUBMIT_SCHEMA = multipart_body(["file"], form_fields(JobRequest))  # the form is JobOptions + request fields
SUBMIT_SCHEMA["requestBody"]["content"]["application/json"] = {"schema": SourceJob.model_json_schema()}


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
async def submit_job(request: Request, services: ServicesDep, who: CallerDep) -> JSONResponse:
    """Accept an audio/video file (multipart `file`) or a file on a stage (JSON `{"source": "@STAGE/path"}`);
    answers 202 once the audio and the job are durably stored."""
    key = request.headers.get("idempotency-key")
    if request.headers.get("content-type", "").startswith("application/json"):
        fields = await json_fields(request, services.settings)
        if key:
            fields.setdefault("idempotency_key", key)
        source: SourceJob = validated(SourceJob, fields)
        options = JobRequest(**source.model_dump(exclude={"source"}, exclude_unset=True))
        job, replayed = await accept_source(services, source.source, options, who.user)
    else:
        async with multipart(request) as (upload, form):
            if key:
                form.setdefault("idempotency_key", key)
            job, replayed = await accept(services, upload, validated(JobRequest, form), who.user)
    if replayed:
        return _job_response(job, 200, **{"idempotent-replayed": "true"})
    return _job_response(job, 202)


async def _job_or_404(store: JobStore, who: Caller, job_id: str) -> Job:
    job = await store.get(job_id)
    if job is None or not who.sees(job):  # another user's job does not exist for this caller
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return job


@router.get("/{job_id}", response_model=JobView)
async def get_job(
    services: ServicesDep,
    who: CallerDep,
    job_id: str,
    wait: float = Query(0, ge=0, le=MAX_WAIT_S, description=WAIT_DOC),
) -> JobView:
    job = await _job_or_404(services.store, who, job_id)
    if wait > 0 and not job.status.terminal:
        held, limit = services.long_polls, services.settings.gateway.max_long_polls
        if held >= limit:  # each held poll is a connection and a periodic store read: bounded, and refused
            raise ApiError(  # with 429 rather than answered at once (which would make a poll loop spin)
                429,
                "too_many_waiters",
                f"{held} long polls are open (limit {limit}, MAX_LONG_POLLS); retry later or poll without `wait`",
                retry_after=WAITERS_RETRY_S,
            )
        services.long_polls = held + 1
        try:
            job = await services.dispatcher.wait_finished(job_id, wait)
        except (TimeoutError, KeyError):  # time's up (its state now), or deleted meanwhile (404)
            job = await _job_or_404(services.store, who, job_id)
        finally:
            services.long_polls -= 1
    return JobView.of(job)


@router.get("/{job_id}/transcript", responses={200: {"content": {t: {} for t in FORMATS.values()}}})
async def get_transcript(
    store: StoreDep,
    dispatcher: DispatcherDep,
    who: CallerDep,
    job_id: str,
    format: str = Query("json", description=", ".join(FORMATS)),
    partial: bool = Query(False, description="while the job runs: the segments decoded so far"),
) -> Response:
    if format not in FORMATS:
        raise ApiError(400, "unsupported_format", f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    job = await _job_or_404(store, who, job_id)
    if job.status == JobStatus.FAILED:
        raise ApiError(409, "job_failed", f"the job failed: {job.error_message}", job_status=job.status.value)
    if partial and job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        segments = sorted(dispatcher.partial.get(job_id, []), key=lambda s: s.start)
        so_far = Transcript(text=joined_text(segments), language=job.language, segments=segments)
        body, media_type = render(so_far, format, job.options.task)
        return Response(body, media_type=media_type, headers={"x-partial": "true"})
    transcript = await store.transcript(job_id)
    if transcript is None:
        raise ApiError(
            409, "not_ready", f"the job is {job.status.value}; no transcript yet", job_status=job.status.value
        )
    body, media_type = render(transcript, format, job.options.task)
    headers = {"x-partial": "false"} if partial else {}  # asked for partial, but the job has finished
    if format in ("srt", "vtt", "text"):
        stem = job.source.rsplit(".", 1)[0] or job.id
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:100]
        ext = "txt" if format == "text" else format
        headers["content-disposition"] = f'inline; filename="{safe}.{ext}"'
    return Response(body, media_type=media_type, headers=headers)


@router.get(
    "/{job_id}/audio", response_class=FileResponse, responses={200: {"content": {"application/octet-stream": {}}}}
)
async def get_audio(services: ServicesDep, who: CallerDep, job_id: str) -> FileResponse:
    """The job's audio as it was submitted (for players: supports Range requests)."""
    job = await _job_or_404(services.store, who, job_id)
    if job.source_kind == "stage":
        ref = parse_stage_ref(job.source)
        # Re-checked on every download: a job accepted under an older, wider allow-list serves nothing now.
        StageAllowlist.of(services.settings).check(ref, who.role)
        local = services.stages.local_path(ref)
        if local is None:
            raise ApiError(404, "audio_unavailable", f"{ref} is on a stage this gateway does not mount")
    else:
        local = services.store.audio_path(job.id)
    if not local.is_file():
        raise ApiError(404, "audio_unavailable", "the job's audio is no longer stored")
    media_type, ext = audio_type(await container_of(local, services.intake), job.source)
    stem = job.source.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:100] or job.id
    return FileResponse(local, media_type=media_type, filename=f"{name}.{ext}", headers=AUDIO_HEADERS)


def audio_type(container: str | None, source: str) -> tuple[str, str]:
    """(Content-Type, file extension) for audio in `container` (PyAV's name; None: not recognised). The
    source's name may pick a type only among those of that container (an `.m4a` is served as audio/mp4)."""
    if container not in AUDIO_TYPES:
        return UNKNOWN_AUDIO
    default, ext, others = AUDIO_TYPES[container]
    guessed = mimetypes.guess_type(source)[0]
    return (guessed if guessed in others else default), ext


@router.get("/{job_id}/translation", response_model=TranslationView)
async def get_translation(store: StoreDep, who: CallerDep, job_id: str) -> TranslationView:
    """The transcript translated into the job's `translate_to` language (409 until it is ready)."""
    job = await _job_or_404(store, who, job_id)
    if not job.options.translate_to:
        raise ApiError(404, "no_translation", "the job did not ask for a translation (translate_to)")
    translation = await store.translation(job_id)
    if translation is None:
        code, message = (
            ("job_failed", f"the job failed: {job.error_message}")
            if job.status == JobStatus.FAILED
            else ("not_ready", f"the job is {job.status.value}; no translation yet")
        )
        raise ApiError(409, code, message, job_status=job.status.value)
    return TranslationView(**translation)


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
    store: StoreDep,
    who: CallerDep,
    limit: int = Query(50, ge=1, le=200),
    status: JobStatus | None = Query(None),
    cursor: str | None = Query(None, max_length=500),
) -> JobList:
    """Newest first; pass `next_cursor` back as `cursor` for the next page."""
    before = _decode_cursor(cursor) if cursor else None
    jobs = await store.list(status, limit + 1, before, who.owner_filter)
    page = jobs[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(jobs) > limit else None
    return JobList(jobs=[JobView.of(j) for j in page], next_cursor=next_cursor)


@router.delete("/{job_id}", response_model=JobView, responses={204: {"description": "finished job deleted"}})
async def delete_job(store: StoreDep, dispatcher: DispatcherDep, who: CallerDep, job_id: str) -> Response:
    """A queued or running job is cancelled (200); a finished one is deleted with its audio (204)."""
    for _ in range(3):  # the job may move on between the read and the update
        job = await _job_or_404(store, who, job_id)
        if job.status.terminal:
            await store.delete(job_id)
            return Response(status_code=204)
        try:
            if await store.transition(job, JobStatus.CANCELLED):
                dispatcher.cancel(job_id)
                return _job_response(await _job_or_404(store, who, job_id), 200)
        except InvalidTransition:
            continue
    raise ApiError(409, "conflict", "the job changed while being cancelled; try again")
