"""Snowflake service functions: `SELECT TRANSCRIBE('@STAGE/a.mp4', 'hi')` reaches these routes in batches.

Protocol: request `{"data": [[row, arg1, ...], ...]}`, reply `{"data": [[row, value], ...]}` with every row in
the same order. A row that cannot be done answers `{"error": {...}}` for that row only. 429 (saturated) makes
Snowflake retry the batch; the batch id header makes the retry reuse its jobs.

A row's options are the text arguments after the source (`language`, `translate_to`) or ONE object of job
options, `TRANSCRIBE(source, OBJECT_CONSTRUCT('speakers', TRUE))` (function_options.py); an unknown key or a bad
value is that row's `validation_error`, never the batch's.

`TRANSCRIBE` follows the asynchronous protocol: when the rows are not done within `function_wait_s`, the POST
answers 202 and Snowflake polls with GET (headers only, the same batch id) until a 200 carries the rows. No
HTTP request stays open for long, and BATCH_TIMEOUT_SECS, which covers a batch's retries and polls together,
is the only bound on how long a batch may take.
https://docs.snowflake.com/en/sql-reference/external-functions-implementation
https://docs.snowflake.com/en/sql-reference/external-functions-data-format
https://docs.snowflake.com/en/release-notes/bcr-bundles/2025_02/bcr-1938 (retries, BATCH_TIMEOUT_SECS)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.api.admission import accept_source, check_backlog
from service.api.callers import Caller
from service.api.deps import CallerDep, Services, ServicesDep
from service.api.errors import ApiError
from service.api.function_batches import BatchRow
from service.api.function_options import OptionsError, job_request, validation_message
from service.api.intake import json_fields
from service.audio import AudioError
from service.config import Settings
from service.jobs.model import Job, JobStatus
from service.storage.sources import SourceError
from service.transcript import Transcript

router = APIRouter(prefix="/functions", tags=["snowflake service functions"])
MAX_ROWS = 1000
BATCH_ID_HEADER = "sf-external-function-query-batch-id"
QUERY_ID_HEADER = "sf-external-function-current-query-id"
log = logging.getLogger(__name__)
Row = tuple[int, list[Any]]

FUNCTION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "array", "items": {"type": "array"}}},
                }
            }
        },
    }
}


def _row_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _rows(request: Request, settings: Settings, min_args: int, max_args: int) -> list[Row]:
    body = await json_fields(request, settings)
    data = body.get("data")
    if not isinstance(data, list):
        raise ApiError(400, "invalid_batch", 'the body must be {"data": [[row_number, arg, ...], ...]}')
    if len(data) > MAX_ROWS:
        raise ApiError(413, "batch_too_large", f"{len(data)} rows; at most {MAX_ROWS} per batch (MAX_BATCH_ROWS)")
    rows = []
    for item in data:
        ok = isinstance(item, list) and item and isinstance(item[0], int) and not isinstance(item[0], bool)
        if not ok or not min_args <= len(item) - 1 <= max_args:
            raise ApiError(
                400, "invalid_batch", f"each row is [row_number, {min_args} to {max_args} arguments]; got {item!r:.200}"
            )
        rows.append((item[0], item[1:]))
    return rows


async def _submit(request: Request, services: Services, who: Caller, row: int, source: Any, *args: Any) -> Job | dict:
    """A stage job for one row (reused when Snowflake retries the batch), or that row's error. `args`: the
    row's arguments after the source (a language and a translation target, or one options object)."""
    key = _row_key(request, row, [source, *args])
    if not isinstance(source, str):
        return _row_error("invalid_source", "the source must be a string like '@STAGE/path/file.mp4'")
    try:
        options = job_request(list(args), key)
        job, _ = await accept_source(services, source, options, who.user, role=who.role, origin="function")
    except ValidationError as exc:
        return _row_error("validation_error", validation_message(exc))
    except OptionsError as exc:
        return _row_error("validation_error", str(exc))
    except (SourceError, AudioError) as exc:
        if getattr(exc, "status", None) == 429:
            raise ApiError(429, exc.code, exc.message, retry_after=5) from None  # the whole batch is retried
        return _row_error(exc.code, exc.message)
    except ApiError as exc:
        if exc.status in (429, 503):
            raise  # the whole batch is retried
        return _row_error(exc.code, exc.message)
    return job


def _result(job: Job | None, transcript: Transcript | None, translation: dict | None = None) -> dict[str, Any]:
    """A TRANSCRIBE row's value: `{"job_id", "text", "language", "duration", "segments"}`, plus `speakers` (the
    labels, in order of first appearance) when the job asked for speakers, each segment (and word) then carrying
    its `speaker`; plus `translation` (its text) when the options named `translate_to`."""
    if job is None:
        return _row_error("job_not_found", "the job was deleted")
    if job.status != JobStatus.SUCCEEDED or transcript is None:
        return _row_error(job.error_code or job.status.value, job.error_message or f"the job is {job.status.value}")
    body = transcript.dump()
    value = {"job_id": job.id, **{k: body.get(k) for k in ("text", "language", "duration", "segments")}}
    if transcript.speakers is not None:
        value["speakers"] = transcript.speakers
    if translation is not None:
        value["translation"] = translation.get("text")
    return value


def _row_key(request: Request, row: int, args: list[Any]) -> str | None:
    """The idempotency key of a row's job: Snowflake's batch id (stable across its retries); without it, the
    query id with the row's arguments; without either, none (not a call Snowflake made)."""
    batch_id = request.headers.get(BATCH_ID_HEADER)
    if batch_id:
        return f"sf:{request.url.path}:{batch_id}:{row}"
    query_id = request.headers.get(QUERY_ID_HEADER)
    if query_id:
        digest = hashlib.sha256(json.dumps(args, default=str, sort_keys=True).encode()).hexdigest()[:16]
        return f"sf:{request.url.path}:q:{query_id}:{row}:{digest}"
    return None


def _batch_id(request: Request) -> str | None:
    batch_id = request.headers.get(BATCH_ID_HEADER)
    if not batch_id:
        log.warning(
            "%s %s without the %s header (query %s): retries are matched by query id, and the call waits "
            "synchronously (no polling without a batch id)",
            request.method,
            request.url.path,
            BATCH_ID_HEADER,
            request.headers.get(QUERY_ID_HEADER, "unknown"),
        )
    return batch_id


async def _answer(services: Services, who: Caller, batch: list[BatchRow], wait_s: float) -> list[list[Any]] | None:
    """The batch's rows once every job finished within `wait_s`; None while some still run. A row whose job
    is not the caller's (a batch id sent by another user) answers job_not_found, as TRANSCRIPTION_STATUS does."""
    job_ids = [r.job_id for r in batch if r.job_id]
    finished = await asyncio.gather(
        *(services.dispatcher.wait_finished(job_id, wait_s) for job_id in job_ids), return_exceptions=True
    )
    if any(isinstance(f, TimeoutError) for f in finished):
        return None
    done = dict(zip(job_ids, finished))
    data = []
    for row in batch:
        if row.job_id is None:
            data.append([row.row, row.error])
            continue
        outcome = done[row.job_id]
        final = outcome if isinstance(outcome, Job) and who.sees(outcome) else None  # KeyError: deleted
        transcript = await services.store.transcript(final.id) if final else None
        translation = None
        if final is not None and transcript is not None and final.options.translate_to:
            translation = await services.store.translation(final.id)
        data.append([row.row, _result(final, transcript, translation)])
    return data


async def _reply(request: Request, services: Services, who: Caller, batch_id: str, batch: list[BatchRow]) -> Any:
    """200 with the rows, or 202 (Snowflake polls again with GET) while jobs still run."""
    data = await _answer(services, who, batch, services.settings.gateway.function_wait_s)
    if data is None:
        running = sum(1 for r in batch if r.job_id)
        return JSONResponse({"status": "running", "rows": len(batch), "jobs": running}, status_code=202)
    services.function_batches.drop(request.url.path, batch_id)
    return {"data": data}


@router.post("/transcribe", openapi_extra=FUNCTION_BODY, responses={202: {"description": "still running: poll"}})
async def transcribe(request: Request, services: ServicesDep, who: CallerDep) -> Any:
    """`TRANSCRIBE(source[, language])` and `TRANSCRIBE(source, options)`: every row's transcript (`{"text",
    "language", "duration", "segments"}`, with `speakers` and each segment's `speaker` when the options ask for
    speakers); a row that fails answers `{"error": {"code", "message"}}`. 202 when not done within
    `function_wait_s`: Snowflake then polls `GET /functions/transcribe` with the same batch id."""
    rows = await _rows(request, services.settings, 1, 2)
    batch_id = _batch_id(request)
    await check_backlog(services, len(rows), who.user)
    batch = []
    for row, args in rows:
        job = await _submit(request, services, who, row, *args)
        batch.append(BatchRow(row, job.id) if isinstance(job, Job) else BatchRow(row, error=job))
    if batch_id is not None:
        services.function_batches.save(request.url.path, batch_id, batch)
        return await _reply(request, services, who, batch_id, batch)
    data = await _answer(services, who, batch, services.settings.gateway.function_timeout_s)
    if data is None:
        raise ApiError(503, "still_running", "the batch's jobs are still running; retry", retry_after=10)
    return {"data": data}


@router.get("/transcribe", responses={202: {"description": "still running"}, 404: {"description": "unknown"}})
async def transcribe_poll(request: Request, services: ServicesDep, who: CallerDep) -> Any:
    """Snowflake's poll of a batch answered 202: 202 again while its jobs run, then 200 with every row."""
    batch_id = request.headers.get(BATCH_ID_HEADER)
    if not batch_id:
        raise ApiError(400, "missing_batch_id", f"a poll carries the {BATCH_ID_HEADER} header of its batch")
    batch = services.function_batches.load(request.url.path, batch_id)
    if batch is None:  # never seen, or answered already: Snowflake sends the batch again (its jobs are reused)
        raise ApiError(404, "batch_not_found", "no batch with this id is being answered; send it again")
    return await _reply(request, services, who, batch_id, batch)


@router.post("/submit", openapi_extra=FUNCTION_BODY)
async def submit(request: Request, services: ServicesDep, who: CallerDep) -> dict[str, Any]:
    """`TRANSCRIBE_SUBMIT(source, language, translate_to)` and `TRANSCRIBE_SUBMIT(source, options)`: queues each
    row's job and answers at once with `{"job_id", "status"}`."""
    rows = await _rows(request, services.settings, 1, 3)
    await check_backlog(services, len(rows), who.user)
    data = []
    for row, args in rows:
        job = await _submit(request, services, who, row, *args)
        data.append([row, {"job_id": job.id, "status": job.status.value} if isinstance(job, Job) else job])
    return {"data": data}


@router.post("/job_status", openapi_extra=FUNCTION_BODY)
async def job_status(request: Request, services: ServicesDep, who: CallerDep) -> dict[str, Any]:
    """`TRANSCRIPTION_STATUS(job_id)`: status, progress and, once done, the text (and its translation)."""
    rows = await _rows(request, services.settings, 1, 1)
    store = services.store
    data = []
    for row, (job_id,) in rows:
        job = await store.get(str(job_id)) if isinstance(job_id, str) else None
        if job is None or not who.sees(job):
            data.append([row, _row_error("job_not_found", f"no job with id {job_id!r:.100}")])
            continue
        value: dict[str, Any] = {"job_id": job.id, "status": job.status.value, "source": job.source}
        value["progress"] = 1.0 if job.status == JobStatus.SUCCEEDED else round(job.progress, 4)
        if job.error_code:
            value["error"] = {"code": job.error_code, "message": job.error_message}
        if transcript := await store.transcript(job.id):
            value.update(text=transcript.text, language=transcript.language)
            if transcript.speakers is not None:
                value["speakers"] = transcript.speakers
        if job.options.translate_to and (translation := await store.translation(job.id)):
            value["translation"] = translation["text"]
        data.append([row, value])
    return {"data": data}


@router.post("/drain", openapi_extra=FUNCTION_BODY)
async def drain(request: Request, services: ServicesDep, who: CallerDep) -> dict[str, Any]:
    """`WHISPER_DRAIN(timeout_s)`, before `make teardown` (admin users or role only): claim no more jobs, let
    the running ones finish for up to `timeout_s`, export everything to the Snowflake tables, and answer
    `{"drained", "running", "queued", "pending_exports"}`. `drained` is true only when nothing runs and nothing
    waits to be exported: then the block volume may be dropped without losing anything that is not in the
    tables (queued jobs are there as `queued`, and the next deployment takes them in again)."""
    rows = await _rows(request, services.settings, 1, 1)
    if not who.admin:
        error = _row_error("forbidden", "WHISPER_DRAIN is for the admin users and role (SPCS_WHISPER_ADMIN_*)")
        return {"data": [[row, error] for row, _ in rows]}
    try:
        timeout = min(max(float(rows[0][1][0] or 0), 0.0), 3000.0)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_batch", "WHISPER_DRAIN(timeout_s) takes a number of seconds") from None
    running = await services.dispatcher.drain(timeout)
    flush = getattr(services.store, "flush", None)
    try:
        pending = await flush() if flush is not None else 0
        export_error = None
    except Exception as exc:  # Snowflake unreachable: what is pending stays on the block volume
        # Only a store with `flush` (SnowflakeStore) gets here, and it has an exporter; JobStore declares neither.
        pending = await services.store.exporter.pending()  # type: ignore[attr-defined]
        log.warning("WHISPER_DRAIN: the export failed: %s", exc)
        export_error = f"{type(exc).__name__} (details in the gateway's log)"
    counts = await services.store.count_by_status()
    value: dict[str, Any] = {
        "drained": running == 0 and pending == 0,
        "running": running,
        "queued": counts.get("queued", 0),
        "pending_exports": pending,
    }
    if export_error:
        value["export_error"] = export_error
    log.warning("drained for teardown: %s", value)
    return {"data": [[row, value] for row, _ in rows]}
