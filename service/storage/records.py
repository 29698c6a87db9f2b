"""Job <-> plain record (ISO datetimes, status strings), shared by every store backend."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.jobs.model import Job, JobStatus

DATETIME_FIELDS = ("submitted_at", "started_at", "finished_at", "not_before")
JOB_FIELDS = tuple(Job.__dataclass_fields__)


def job_to_record(job: Job) -> dict[str, Any]:
    """Every field of `job`; datetimes as ISO strings, the status as its value."""
    data = dict(job.__dict__)
    for key in DATETIME_FIELDS:
        data[key] = data[key].isoformat() if data[key] else None
    data["status"] = job.status.value
    return data


def transcript_fields(job: Job, transcript: dict[str, Any]) -> dict[str, Any]:
    """The job columns a stored transcript sets (its length, timings and detected language)."""
    return {
        "audio_seconds": transcript.get("duration"),
        "timings": transcript.get("timings", {}),
        "language": transcript.get("language") or job.language,
        "error_code": None,
        "error_message": None,
    }


def job_from_record(data: dict[str, Any]) -> Job:
    """The inverse of `job_to_record`; keys are matched case-insensitively, unknown ones ignored."""
    values = {key.lower(): value for key, value in data.items()}
    values = {key: values[key] for key in JOB_FIELDS if key in values}
    for key in DATETIME_FIELDS:
        value = values.get(key)
        if isinstance(value, str):
            values[key] = datetime.fromisoformat(value)
    values["status"] = JobStatus(values["status"])
    values["word_timestamps"] = bool(values.get("word_timestamps"))
    values["timings"] = values.get("timings") or {}
    values["options"] = values.get("options") or {}
    return Job(**values)
