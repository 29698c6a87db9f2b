"""Admitting a job: model and translation checks, queue bounds, then the audio and the row stored durably.
Uploads, stage files, URLs and batches all come through here, so every route enforces the same rules."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.datastructures import UploadFile

from service.api.errors import ApiError
from service.api.intake import BatchRequest, JobRequest
from service.api.uploads import check_size, probe_file, probe_stored, receive_upload
from service.config import Settings
from service.inference.types import AppInfo
from service.jobs.lanes import Origin, lane_of
from service.jobs.model import Batch, Job, new_batch_id, new_job_id, now
from service.storage.base import Bounds, DuplicateIdempotencyKey, QueueFull
from service.storage.remote import fetch_url
from service.storage.stages import StageAllowlist, compile_pattern, parse_stage_ref

if TYPE_CHECKING:
    from service.api.deps import Services


def _check_model(options: JobRequest, info: AppInfo | None, configured: str) -> str:
    """The model that will run the job; refuses what it cannot do (English-only model, other model)."""
    served = info.model if info is not None and info.model else configured
    if options.model not in (None, "", served, "whisper-1"):
        raise ApiError(422, "unsupported_model", f"this service runs model {served!r}, not {options.model!r}")
    english_only = info is not None and not info.multilingual
    if english_only and (problem := options.english_only_problem(served)):
        raise ApiError(422, "unsupported_language", problem)
    return served


def _check_translation(options: JobRequest, settings: Settings) -> None:
    """Whisper translates into English only; Cortex into any language it supports."""
    if options.translate_to and options.translate_to != "en" and settings.effective_translate_method == "whisper":
        raise ApiError(
            422,
            "unsupported_translation",
            "the whisper translation method translates into English only; "
            "set SPCS_WHISPER_TRANSLATE_METHOD to a Cortex method for other languages",
        )


def bounds(settings: Settings, owner: str | None) -> Bounds:
    """The backlog limits for a write by `owner`."""
    return Bounds(settings.gateway.max_queued_jobs, owner, settings.gateway.max_jobs_per_user)


def _refusal(full: QueueFull) -> ApiError:
    """429 with Retry-After: back-pressure, never a 5xx."""
    if full.code == "too_many_jobs":
        message = f"{full.owner} has {full.active} jobs waiting or running (limit {full.limit}); retry later"
    else:
        message = f"{full.active} jobs are waiting; retry later"
    return ApiError(429, full.code, message, retry_after=30, queued=full.active)


async def check_backlog(services: Services, adding: int = 1, owner: str | None = None) -> None:
    """The early check, before any audio is stored: 429 once the backlog would pass its bound, or the
    caller's own share of it. The exact check is the store's, in the write that adds the jobs."""
    limits = bounds(services.settings, owner)
    mine = await services.store.count_active(owner) if limits.per_owner else None
    try:
        limits.check(adding, await services.store.count_active(), mine)
    except QueueFull as full:
        raise _refusal(full) from None


def _job(request: JobRequest, model: str, settings: Settings, origin: Origin, **fields: Any) -> Job:
    """A new job; its lane follows from where it comes from and how long its audio is (`lane_of`)."""
    return Job(
        id=new_job_id(),
        language=request.language,
        model=model,
        idempotency_key=request.idempotency_key,
        options=request.job_options(),
        lane=lane_of(settings, source=origin, audio_seconds=fields.get("audio_seconds")),
        **fields,
    )


async def _replay(services: Services, options: JobRequest, owner: str | None) -> Job | None:
    """The job this caller's idempotency key already names. Keys belong to their owner: another user's key
    names nothing here (no oracle of what others submitted, no squatting of their keys), a job without an owner
    is never replayed to a user, nor a user's job to a caller without one."""
    if not options.idempotency_key:
        return None
    return await services.store.find_by_idempotency_key(options.idempotency_key, owner)


async def _add(services: Services, job: Job, audio: Path | None) -> tuple[Job, bool]:
    try:
        job = await services.store.add(
            job, audio, bounds(services.settings, job.owner)
        )  # exact bounds: no overshoot under races
    except DuplicateIdempotencyKey as dup:
        if audio is not None:
            audio.unlink(missing_ok=True)
        return dup.job, True
    except QueueFull as full:
        if audio is not None:
            audio.unlink(missing_ok=True)
        raise _refusal(full) from None
    except BaseException:  # disk full, store down, cancelled: the job was not stored, so neither is its upload
        if audio is not None:
            audio.unlink(missing_ok=True)
        raise
    services.dispatcher.wake()
    return job, False


MB = 1024 * 1024


def check_disk(settings: Settings, incoming_bytes: int = 0) -> None:
    """507 before the data volume fills: the queue (SQLite) and uploads live there, and a full disk must
    refuse new work rather than fail writes half way."""
    free = shutil.disk_usage(settings.gateway.data_dir).free
    if free - incoming_bytes < settings.gateway.min_free_disk_mb * MB:
        raise ApiError(
            507,
            "insufficient_storage",
            f"the service's data volume is nearly full ({free // MB} MB free); retry later",
            retry_after=300,
        )


async def _admission(
    services: Services, options: JobRequest, owner: str | None, incoming_bytes: int = 0
) -> tuple[Job | None, str]:
    """What every single-job route checks first: (the job an idempotency key already names, or None; the
    model that will run it), after the disk (room for `incoming_bytes` more), model, translation and queue
    checks."""
    if existing := await _replay(services, options, owner):
        return existing, ""
    check_disk(services.settings, incoming_bytes)
    model = _checked_model(services, options)
    await check_backlog(services, owner=owner)
    return None, model


def _checked_model(services: Services, options: JobRequest) -> str:
    model = _check_model(options, services.dispatcher.model_info, services.settings.inference.model)
    _check_translation(options, services.settings)
    return model


async def accept(
    services: Services,
    upload: UploadFile,
    options: JobRequest,
    owner: str | None = None,
    origin: Origin = "upload",
) -> tuple[Job, bool]:
    """Store the upload and the job; returns (job, replayed) where `replayed` means the idempotency key
    named an existing job, which is returned instead of a new one. `origin`: the route, for the job's lane."""
    settings = services.settings
    # room for the largest upload, before it streams in
    existing, model = await _admission(services, options, owner, settings.inference.max_upload_bytes)
    if existing:
        return existing, True
    path = services.store.incoming_path(uuid.uuid4().hex)
    size, info = await receive_upload(upload, path, settings, services.intake)
    source = (upload.filename or "upload")[:500]
    job = _job(options, model, settings, origin, source=source, audio_seconds=info.duration, bytes=size, owner=owner)
    return await _add(services, job, path)


async def accept_url(
    services: Services, url: str, options: JobRequest, owner: str | None = None, origin: Origin = "url"
) -> tuple[Job, bool]:
    """Download an https source (address checks against SSRF, size and time limits) into the store, then
    treat it like an upload. The stored source drops the query string: signed URLs carry credentials."""
    existing, model = await _admission(services, options, owner)
    if existing:
        return existing, True
    settings = services.settings
    path = services.store.incoming_path(uuid.uuid4().hex)
    size, final_url = await fetch_url(
        url,
        path,
        max_bytes=settings.inference.max_upload_bytes,
        timeout_s=settings.gateway.url_timeout_s,
        allow_http=settings.gateway.url_allow_http,
        allowlist=settings.gateway.url_allowlist,
        max_concurrent=settings.gateway.max_url_downloads,
    )
    info = await probe_stored(path, size, settings, services.intake)
    display = urlsplit(final_url)._replace(query="", fragment="").geturl()[:500]
    job = _job(options, model, settings, origin, source=display, audio_seconds=info.duration, bytes=size, owner=owner)
    return await _add(services, job, path)


async def accept_source(
    services: Services,
    source: str,
    options: JobRequest,
    owner: str | None = None,
    role: str | None = None,
    origin: Origin | None = None,
) -> tuple[Job, bool]:
    """A JSON `source`: `https://...` is downloaded, `@STAGE/path` is read from its stage when the job runs.
    `role`: the caller's Snowflake role as callers.role believes it (None: only the allow-list's "*" entries).
    `origin`: the route, for the job's lane (None: `url` or `stage`, by the source)."""
    if source.lower().startswith(("https://", "http://")):
        return await accept_url(services, source, options, owner, origin or "url")
    return await accept_stage_file(services, source, options, owner, role, origin or "stage")


async def accept_stage_file(
    services: Services,
    source: str,
    options: JobRequest,
    owner: str | None = None,
    role: str | None = None,
    origin: Origin = "stage",
) -> tuple[Job, bool]:
    """A job whose audio stays on its stage: allowed (the stage allow-list, before anything on the stage is
    looked up), checked (exists, size, and probed when the stage is mounted) and stored; returns (job, replayed)
    like `accept`."""
    ref = parse_stage_ref(source)
    settings, stages = services.settings, services.stages
    StageAllowlist.of(settings).check(ref, role)  # 403: never a deputy for stages the caller may not name
    existing, model = await _admission(services, options, owner)
    if existing:
        return existing, True
    size = await stages.size(ref)
    check_size(size, settings, str(ref))
    duration = None
    if path := stages.local_path(ref):  # a stage read through Snowpark is checked when the job runs
        duration = (await probe_file(path, size, settings, services.intake)).duration
    job = _job(
        options,
        model,
        settings,
        origin,
        source=str(ref),
        source_kind="stage",
        bytes=size,
        audio_seconds=duration,
        owner=owner,
    )
    return await _add(services, job, None)


async def accept_batch(
    services: Services, request: BatchRequest, owner: str | None = None, role: str | None = None
) -> tuple[Batch, list[Job]]:
    """One stage job per matching file, stored together (all or none); files are probed when they run. The stage
    must be on the allow-list; the pattern is RE2, matched off the event loop within BATCH_MATCH_TIMEOUT_S."""
    prefix = parse_stage_ref(request.stage, file=False)
    settings = services.settings
    StageAllowlist.of(settings).check(prefix, role)
    pattern = compile_pattern(request.pattern)
    model = _checked_model(services, request)
    check_disk(settings)
    files = await services.stages.list(
        prefix, pattern, settings.gateway.max_batch_files, timeout_s=settings.gateway.batch_match_timeout_s
    )
    if not files:
        raise ApiError(404, "no_matching_files", f"no file under {prefix} matches {request.pattern!r}")
    await check_backlog(services, len(files), owner)
    batch = Batch(new_batch_id(), str(prefix), request.pattern, options=request.job_options(), files=len(files))
    start, tick = now(), timedelta(microseconds=1)  # distinct times keep the files' order in the queue
    per_file = request.model_copy(update={"idempotency_key": None})
    jobs = [
        _job(
            per_file,
            model,
            settings,
            "batch",
            source=str(ref),
            source_kind="stage",
            batch_id=batch.id,
            submitted_at=start + tick * i,
            owner=owner,
        )
        for i, ref in enumerate(files)
    ]
    try:
        await services.store.add_batch(batch, jobs, bounds(settings, owner))
    except QueueFull as full:
        raise _refusal(full) from None
    services.dispatcher.wake()
    return batch, jobs
