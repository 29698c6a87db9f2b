"""Job <-> plain record (ISO datetimes, status strings, options as their stored dict), shared by every store
backend, and the job fields a stored transcript sets."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from service.jobs.model import Job, JobStatus
from service.options import JobOptions
from service.transcript import Timings, Transcript

log = logging.getLogger(__name__)

DATETIME_FIELDS = ("submitted_at", "started_at", "finished_at", "not_before")
JOB_FIELDS = tuple(Job.__dataclass_fields__)
# Options that earlier releases kept as job fields / columns of their own; records of those releases (an old
# outbox, Snowflake rows of the release that queued there) still carry them flat.
LEGACY_OPTION_FIELDS = ("task", "word_timestamps", "prompt", "temperature", "translate_to")
_LEGACY_ONLY = ("word_timestamps", "prompt", "temperature")  # never in a record of this release
_UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)  # their `language` is still the one asked for


def options_from_stored(data: dict[str, Any] | JobOptions | None) -> JobOptions:
    """A stored OPTIONS value as `JobOptions`; keys this release does not know (an older batch's `model`) are
    dropped, and a value that no longer validates is kept as stored rather than failing the read."""
    if isinstance(data, JobOptions):
        return data
    known = {k: v for k, v in (data or {}).items() if k in JobOptions.model_fields}
    if dropped := sorted(set(data or {}) - set(known)):
        log.debug("stored options without a field any more, ignored: %s", dropped)
    try:
        return JobOptions.model_validate(known)
    except ValidationError as exc:
        log.warning("stored options no longer validate (%s); kept as stored", exc.errors()[0].get("msg"))
        return JobOptions.model_construct(**known)


def job_to_record(job: Job) -> dict[str, Any]:
    """Every field of `job`; datetimes as ISO strings, the status as its value, options as `stored()`."""
    data = dict(job.__dict__)
    for key in DATETIME_FIELDS:
        data[key] = data[key].isoformat() if data[key] else None
    data["status"] = job.status.value
    data["options"] = job.options.stored()
    data["timings"] = job.timings.model_dump(exclude_none=True)
    return data


def transcript_fields(job: Job, transcript: Transcript) -> dict[str, Any]:
    """The job columns a stored transcript sets (its length, timings and detected language)."""
    return {
        "audio_seconds": transcript.duration,
        "timings": transcript.timings.model_dump(exclude_none=True),
        "language": transcript.language or job.language,
        "error_code": None,
        "error_message": None,
    }


def job_from_record(data: dict[str, Any]) -> Job:
    """The inverse of `job_to_record`; keys are matched case-insensitively, unknown ones ignored. Options an
    earlier release kept flat (`LEGACY_OPTION_FIELDS`) are folded into `options`."""
    values = {key.lower(): value for key, value in data.items()}
    options = record_options(values)
    values = {key: values[key] for key in JOB_FIELDS if key in values}
    for key in DATETIME_FIELDS:
        value = values.get(key)
        if isinstance(value, str):
            values[key] = datetime.fromisoformat(value)
    values["status"] = JobStatus(values["status"])
    timings = values.get("timings") or {}
    values["timings"] = Timings.model_validate_json(timings) if isinstance(timings, str) else Timings(**timings)
    values["options"] = options
    return Job(**values)


def record_options(values: dict[str, Any]) -> JobOptions:
    """A record's options (lower-case keys): its `options`, over the flat option fields of an earlier release;
    in a record of such a release, a job not transcribed yet also keeps its `language` as the one asked for."""
    flat = {key: values[key] for key in LEGACY_OPTION_FIELDS if values.get(key) is not None}
    stored = values.get("options")
    options = {**flat, **(stored.stored() if isinstance(stored, JobOptions) else stored or {})}
    legacy = any(key in values for key in _LEGACY_ONLY)
    if legacy and "language" not in options and values.get("language") and values.get("status") in _UNFINISHED:
        options["language"] = values["language"]
    return options_from_stored(options)
