"""Snowflake service functions: `SELECT TRANSCRIBE('@STAGE/a.mp4', 'hi')` reaches these routes in batches.

Protocol: request `{"data": [[row, arg1, ...], ...]}`, reply `{"data": [[row, value], ...]}` with every row in
the same order. A row that cannot be done answers `{"error": {...}}` for that row only. 429 (saturated) and
503 (still running) make Snowflake retry the batch; the batch id header makes the retry reuse its jobs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from service.api.admission import accept_source, check_backlog
from service.api.callers import caller, visible
from service.api.errors import ApiError
from service.api.intake import JobOptions, json_fields
from service.audio import AudioError
from service.jobs.model import Job, JobStatus
from service.storage.sources import SourceError

router = APIRouter(prefix="/functions", tags=["snowflake service functions"])
MAX_ROWS = 1000
BATCH_ID_HEADER = "sf-external-function-query-batch-id"
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


async def _rows(request: Request, min_args: int, max_args: int) -> list[Row]:
    body = await json_fields(request)
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


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


async def _submit(
    request: Request, row: int, source: Any, language: Any = None, translate_to: Any = None
) -> Job | dict:
    """A stage job for one row (reused when Snowflake retries the batch), or that row's error."""
    batch_id = request.headers.get(BATCH_ID_HEADER)
    key = f"sf:{request.url.path}:{batch_id}:{row}" if batch_id else None
    if not isinstance(source, str):
        return _row_error("invalid_source", "the source must be a string like '@STAGE/path/file.mp4'")
    try:
        options = JobOptions(language=_text(language), translate_to=_text(translate_to) or None, idempotency_key=key)
        job, _ = await accept_source(request.app.state, source, options, caller(request))
    except ValidationError as exc:
        return _row_error("validation_error", "; ".join(e["msg"] for e in exc.errors()))
    except (SourceError, AudioError) as exc:
        return _row_error(exc.code, exc.message)
    except ApiError as exc:
        if exc.status in (429, 503):
            raise  # the whole batch is retried
        return _row_error(exc.code, exc.message)
    return job


def _result(job: Job | None, transcript: dict[str, Any] | None) -> dict[str, Any]:
    if job is None:
        return _row_error("job_not_found", "the job was deleted")
    if job.status != JobStatus.SUCCEEDED or transcript is None:
        return _row_error(job.error_code or job.status.value, job.error_message or f"the job is {job.status.value}")
    keys = ("text", "language", "duration", "segments")
    return {"job_id": job.id, **{k: transcript.get(k) for k in keys}}


@router.post("/transcribe", openapi_extra=FUNCTION_BODY)
async def transcribe(request: Request) -> dict[str, Any]:
    """`TRANSCRIBE(source, language)`: waits for every row's transcript (`{"text", "language", "duration",
    "segments"}`); a row that fails answers `{"error": {"code", "message"}}`."""
    rows = await _rows(request, 1, 2)
    state = request.app.state
    await check_backlog(state, len(rows), caller(request))
    submitted = [await _submit(request, row, *args) for row, args in rows]
    jobs = [job for job in submitted if isinstance(job, Job)]
    timeout = state.settings.function_timeout_s
    finished = await asyncio.gather(
        *(state.dispatcher.wait_finished(job.id, timeout) for job in jobs), return_exceptions=True
    )
    if any(isinstance(f, TimeoutError) for f in finished):
        raise ApiError(503, "still_running", "the batch's jobs are still running; retry", retry_after=10)
    done = {job.id: f for job, f in zip(jobs, finished)}
    data = []
    for (row, _), job in zip(rows, submitted):
        if not isinstance(job, Job):
            data.append([row, job])
            continue
        final = done[job.id]
        final = final if isinstance(final, Job) else None  # KeyError: deleted meanwhile
        transcript = await state.store.transcript(job.id) if final else None
        data.append([row, _result(final, transcript)])
    return {"data": data}


@router.post("/submit", openapi_extra=FUNCTION_BODY)
async def submit(request: Request) -> dict[str, Any]:
    """`TRANSCRIBE_SUBMIT(source, language, translate_to)`: queues each row's job and answers at once
    with `{"job_id", "status"}`."""
    rows = await _rows(request, 1, 3)
    await check_backlog(request.app.state, len(rows), caller(request))
    data = []
    for row, args in rows:
        job = await _submit(request, row, *args)
        data.append([row, {"job_id": job.id, "status": job.status.value} if isinstance(job, Job) else job])
    return {"data": data}


@router.post("/job_status", openapi_extra=FUNCTION_BODY)
async def job_status(request: Request) -> dict[str, Any]:
    """`TRANSCRIPTION_STATUS(job_id)`: status, progress and, once done, the text (and its translation)."""
    rows = await _rows(request, 1, 1)
    store = request.app.state.store
    data = []
    for row, (job_id,) in rows:
        job = await store.get(str(job_id)) if isinstance(job_id, str) else None
        if job is None or not visible(request, job):
            data.append([row, _row_error("job_not_found", f"no job with id {job_id!r:.100}")])
            continue
        value: dict[str, Any] = {"job_id": job.id, "status": job.status.value, "source": job.source}
        value["progress"] = 1.0 if job.status == JobStatus.SUCCEEDED else round(job.progress, 4)
        if job.error_code:
            value["error"] = {"code": job.error_code, "message": job.error_message}
        if transcript := await store.transcript(job.id):
            value.update(text=transcript.get("text"), language=transcript.get("language"))
        if job.translate_to and (translation := await store.translation(job.id)):
            value["translation"] = translation["text"]
        data.append([row, value])
    return {"data": data}
