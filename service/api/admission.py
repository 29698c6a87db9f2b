"""Admitting a job: model and translation checks, queue bounds, then the audio and the row stored durably.
Uploads, stage files, URLs and batches all come through here, so every route enforces the same rules."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.datastructures import UploadFile

from service.api.callers import caller
from service.api.errors import ApiError
from service.api.intake import BatchRequest, JobOptions
from service.api.uploads import check_size, probe_file, probe_stored, receive_upload
from service.jobs.model import Batch, Job, new_batch_id, new_job_id, now
from service.storage.base import Bounds, DuplicateIdempotencyKey, QueueFull
from service.storage.remote import fetch_url
from service.storage.stages import StageAllowlist, compile_pattern, parse_stage_ref


def _check_model(options: JobOptions, info: dict | None, configured: str) -> str:
    """The model that will run the job; refuses what it cannot do (English-only model, other model)."""
    served = (info or {}).get("model", configured)
    if options.model not in (None, "", served, "whisper-1"):
        raise ApiError(422, "unsupported_model", f"this service runs model {served!r}, not {options.model!r}")
    english_only = bool(info) and not info.get("multilingual", True)
    if english_only and (options.language not in (None, "en") or options.task == "translate"):
        raise ApiError(422, "unsupported_language", f"model {served!r} is English-only")
    return served


def _check_translation(options: JobOptions, settings: Any) -> None:
    """Whisper translates into English only; Cortex into any language it supports."""
    if options.translate_to and options.translate_to != "en" and settings.effective_translate_method == "whisper":
        raise ApiError(
            422,
            "unsupported_translation",
            "the whisper translation method translates into English only; "
            "set SPCS_WHISPER_TRANSLATE_METHOD to a Cortex method for other languages",
        )


def bounds(state: Any, owner: str | None) -> Bounds:
    """The backlog limits for a write by `owner`."""
    return Bounds(state.settings.max_queued_jobs, owner, state.settings.max_jobs_per_user)


def _refusal(full: QueueFull) -> ApiError:
    """429 with Retry-After: back-pressure, never a 5xx."""
    if full.code == "too_many_jobs":
        message = f"{full.owner} has {full.active} jobs waiting or running (limit {full.limit}); retry later"
    else:
        message = f"{full.active} jobs are waiting; retry later"
    return ApiError(429, full.code, message, retry_after=30, queued=full.active)


async def check_backlog(state: Any, adding: int = 1, owner: str | None = None) -> None:
    """The early check, before any audio is stored: 429 once the backlog would pass its bound, or the
    caller's own share of it. The exact check is the store's, in the write that adds the jobs."""
    limits = bounds(state, owner)
    mine = await state.store.count_active(owner) if limits.per_owner else None
    try:
        limits.check(adding, await state.store.count_active(), mine)
    except QueueFull as full:
        raise _refusal(full) from None


def _job(options: JobOptions, model: str, **fields: Any) -> Job:
    return Job(
        id=new_job_id(),
        language=options.language,
        task=options.task,
        word_timestamps=options.word_timestamps,
        prompt=options.prompt,
        temperature=options.temperature,
        model=model,
        idempotency_key=options.idempotency_key,
        translate_to=options.translate_to,
        options=options.decode_options(),
        **fields,
    )


async def _replay(state: Any, options: JobOptions, owner: str | None) -> Job | None:
    """The job this caller's idempotency key already names. Keys belong to their owner: another user's key
    names nothing here (no oracle of what others submitted, no squatting of their keys), a job without an owner
    is never replayed to a user, nor a user's job to a caller without one."""
    if not options.idempotency_key:
        return None
    return await state.store.find_by_idempotency_key(options.idempotency_key, owner)


async def _add(state: Any, job: Job, audio: Any) -> tuple[Job, bool]:
    try:
        job = await state.store.add(job, audio, bounds(state, job.owner))  # exact bounds: no overshoot under races
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
    state.dispatcher.wake()
    return job, False


MB = 1024 * 1024


def check_disk(state: Any, incoming_bytes: int = 0) -> None:
    """507 before the data volume fills: the queue (SQLite) and uploads live there, and a full disk must
    refuse new work rather than fail writes half way."""
    settings = state.settings
    free = shutil.disk_usage(settings.data_dir).free
    if free - incoming_bytes < settings.min_free_disk_mb * MB:
        raise ApiError(
            507,
            "insufficient_storage",
            f"the service's data volume is nearly full ({free // MB} MB free); retry later",
            retry_after=300,
        )


async def _admission(
    state: Any, options: JobOptions, owner: str | None, incoming_bytes: int = 0
) -> tuple[Job | None, str]:
    """What every single-job route checks first: (the job an idempotency key already names, or None; the
    model that will run it), after the disk (room for `incoming_bytes` more), model, translation and queue
    checks."""
    if existing := await _replay(state, options, owner):
        return existing, ""
    check_disk(state, incoming_bytes)
    model = _checked_model(state, options)
    await check_backlog(state, owner=owner)
    return None, model


def _checked_model(state: Any, options: JobOptions) -> str:
    model = _check_model(options, state.dispatcher.model_info, state.settings.model)
    _check_translation(options, state.settings)
    return model


async def accept(request: Request, upload: UploadFile, options: JobOptions) -> tuple[Job, bool]:
    """Store the upload and the job; returns (job, replayed) where `replayed` means the idempotency key
    named an existing job, which is returned instead of a new one."""
    state = request.app.state
    owner = caller(request)
    # room for the largest upload, before it streams in
    existing, model = await _admission(state, options, owner, state.settings.max_upload_bytes)
    if existing:
        return existing, True
    path = state.store.incoming_path(uuid.uuid4().hex)
    size, info = await receive_upload(upload, path, state.settings)
    source = (upload.filename or "upload")[:500]
    job = _job(options, model, source=source, audio_seconds=info.duration, bytes=size, owner=owner)
    return await _add(state, job, path)


async def accept_url(state: Any, url: str, options: JobOptions, owner: str | None = None) -> tuple[Job, bool]:
    """Download an https source (address checks against SSRF, size and time limits) into the store, then
    treat it like an upload. The stored source drops the query string: signed URLs carry credentials."""
    existing, model = await _admission(state, options, owner)
    if existing:
        return existing, True
    settings = state.settings
    path = state.store.incoming_path(uuid.uuid4().hex)
    size, final_url = await fetch_url(
        url,
        path,
        max_bytes=settings.max_upload_bytes,
        timeout_s=settings.url_timeout_s,
        allow_http=settings.url_allow_http,
        allowlist=settings.url_allowlist,
        max_concurrent=settings.max_url_downloads,
    )
    info = await probe_stored(path, size, settings)
    display = urlsplit(final_url)._replace(query="", fragment="").geturl()[:500]
    job = _job(options, model, source=display, audio_seconds=info.duration, bytes=size, owner=owner)
    return await _add(state, job, path)


async def accept_source(
    state: Any, source: str, options: JobOptions, owner: str | None = None, role: str | None = None
) -> tuple[Job, bool]:
    """A JSON `source`: `https://...` is downloaded, `@STAGE/path` is read from its stage when the job runs.
    `role`: the caller's Snowflake role as callers.role believes it (None: only the allow-list's "*" entries)."""
    if source.lower().startswith(("https://", "http://")):
        return await accept_url(state, source, options, owner)
    return await accept_stage_file(state, source, options, owner, role)


async def accept_stage_file(
    state: Any, source: str, options: JobOptions, owner: str | None = None, role: str | None = None
) -> tuple[Job, bool]:
    """A job whose audio stays on its stage: allowed (the stage allow-list, before anything on the stage is
    looked up), checked (exists, size, and probed when the stage is mounted) and stored; returns (job, replayed)
    like `accept`."""
    ref = parse_stage_ref(source)
    StageAllowlist.of(state.settings).check(ref, role)  # 403: never a deputy for stages the caller may not name
    existing, model = await _admission(state, options, owner)
    if existing:
        return existing, True
    size = await state.stages.size(ref)
    check_size(size, state.settings, str(ref))
    duration = None
    if path := state.stages.local_path(ref):  # a stage read through Snowpark is checked when the job runs
        duration = (await probe_file(path, size, state.settings)).duration
    job = _job(options, model, source=str(ref), source_kind="stage", bytes=size, audio_seconds=duration, owner=owner)
    return await _add(state, job, None)


async def accept_batch(
    state: Any, request: BatchRequest, owner: str | None = None, role: str | None = None
) -> tuple[Batch, list[Job]]:
    """One stage job per matching file, stored together (all or none); files are probed when they run. The stage
    must be on the allow-list; the pattern is RE2, matched off the event loop within BATCH_MATCH_TIMEOUT_S."""
    prefix = parse_stage_ref(request.stage, file=False)
    StageAllowlist.of(state.settings).check(prefix, role)
    pattern = compile_pattern(request.pattern)
    model = _checked_model(state, request)
    check_disk(state)
    files = await state.stages.list(
        prefix, pattern, state.settings.max_batch_files, timeout_s=state.settings.batch_match_timeout_s
    )
    if not files:
        raise ApiError(404, "no_matching_files", f"no file under {prefix} matches {request.pattern!r}")
    await check_backlog(state, len(files), owner)
    options = request.model_dump(exclude={"stage", "pattern", "idempotency_key"}, exclude_none=True)
    batch = Batch(new_batch_id(), str(prefix), request.pattern, options=options, files=len(files))
    start, tick = now(), timedelta(microseconds=1)  # distinct times keep the files' order in the queue
    per_file = request.model_copy(update={"idempotency_key": None})
    jobs = [
        _job(
            per_file,
            model,
            source=str(ref),
            source_kind="stage",
            batch_id=batch.id,
            submitted_at=start + tick * i,
            owner=owner,
        )
        for i, ref in enumerate(files)
    ]
    try:
        await state.store.add_batch(batch, jobs, bounds(state, owner))
    except QueueFull as full:
        raise _refusal(full) from None
    state.dispatcher.wake()
    return batch, jobs
