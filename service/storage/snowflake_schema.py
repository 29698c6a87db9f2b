"""The Snowflake tables as Python sees them: one column list per table (mirrored by sql/01_tables.sql, a test
keeps the two equal), and the mapping between jobs, batches, results and rows.

Timestamps are TIMESTAMP_TZ: written as timezone-aware datetimes in UTC (Snowpark renders them as
`'…+00:00'::TIMESTAMP_TZ`), read back as aware datetimes and normalised to UTC. VARIANT values are written
from dicts/lists and come back from `collect()` as JSON text, which is parsed here.
Snowpark is imported inside functions only: the gateway stays light when the store is SQLite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from service.jobs.model import Batch, Job, JobStatus
from service.storage.records import job_from_record, job_to_record
from service.transcript import Transcript

if TYPE_CHECKING:
    from snowflake.snowpark.types import DataType, StructType

VARCHAR, BOOLEAN, FLOAT, NUMBER, TIMESTAMP, VARIANT = (
    "VARCHAR",
    "BOOLEAN",
    "FLOAT",
    "NUMBER(38, 0)",
    "TIMESTAMP_TZ",
    "VARIANT",
)


@dataclass(frozen=True)
class Column:
    name: str  # upper-case column name
    sql: str  # its Snowflake type, as written in sql/01_tables.sql
    field: str  # the attribute of Job / Batch / result dict it holds


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, field: str) -> Column:
        for column in self.columns:
            if column.field == field:
                return column
        raise KeyError(f"{self.name} has no column for {field!r}")

    def struct(self) -> StructType:
        from snowflake.snowpark.types import StructField, StructType

        return StructType([StructField(c.name, snowpark_type(c.sql), nullable=True) for c in self.columns])


def _cols(key: str, *spec: tuple[str, str]) -> tuple[Column, ...]:
    """Columns named after their field (lower-cased), but the `key` column holds the row's own `id`."""
    return tuple(Column(name, sql, "id" if name == key else name.lower()) for name, sql in spec)


JOBS = TableSpec(
    "TRANSCRIPTION_JOBS",
    _cols(
        "JOB_ID",
        ("JOB_ID", VARCHAR),
        ("STATUS", VARCHAR),
        ("SOURCE", VARCHAR),
        ("SOURCE_KIND", VARCHAR),
        ("LANGUAGE", VARCHAR),
        ("TASK", VARCHAR),
        ("TRANSLATE_TO", VARCHAR),
        ("MODEL", VARCHAR),
        ("SUBMITTED_AT", TIMESTAMP),
        ("STARTED_AT", TIMESTAMP),
        ("FINISHED_AT", TIMESTAMP),
        ("NOT_BEFORE", TIMESTAMP),
        ("ATTEMPTS", NUMBER),
        ("ERROR_CODE", VARCHAR),
        ("ERROR_MESSAGE", VARCHAR),
        ("AUDIO_SECONDS", FLOAT),
        ("PROGRESS", FLOAT),
        ("BYTES", NUMBER),
        ("IDEMPOTENCY_KEY", VARCHAR),
        ("BATCH_ID", VARCHAR),
        ("OWNER", VARCHAR),
        ("TIMINGS", VARIANT),
        ("OPTIONS", VARIANT),
    ),
)
# OPTIONS holds the job's options that differ from their defaults (JobOptions.stored()). TASK and TRANSLATE_TO
# are copies of `options.task` / `options.translate_to`, kept as columns for the analysts' SQL (which jobs are
# Whisper translations, which get translated) and because TASK is NOT NULL in every deployed table. Tables of
# an earlier release also have WORD_TIMESTAMPS, PROMPT and TEMPERATURE: nullable and no longer written (read
# only to take in that release's unfinished jobs, snowflake_adopt.py); sql/01_tables.sql no longer makes them.
# `make deploy` adds OPTIONS to such a table with ADD COLUMN IF NOT EXISTS, nullable, NULL in old rows
# (https://docs.snowflake.com/en/sql-reference/sql/alter-table), hence the fold in `job_from_row`.
LEGACY_JOB_COLUMNS = ("WORD_TIMESTAMPS", "PROMPT", "TEMPERATURE")
TRANSCRIPTIONS = TableSpec(
    "TRANSCRIPTIONS",
    _cols(
        "JOB_ID",
        ("JOB_ID", VARCHAR),
        ("SOURCE", VARCHAR),
        ("LANGUAGE", VARCHAR),
        ("TEXT", VARCHAR),
        ("DURATION", FLOAT),
        ("SEGMENTS", VARIANT),
        ("BODY", VARIANT),
        ("MODEL", VARCHAR),
        ("CREATED_AT", TIMESTAMP),
    ),
)
TRANSLATIONS = TableSpec(
    "TRANSLATIONS",
    _cols(
        "JOB_ID",
        ("JOB_ID", VARCHAR),
        ("SOURCE_LANGUAGE", VARCHAR),
        ("TARGET_LANGUAGE", VARCHAR),
        ("TEXT", VARCHAR),
        ("METHOD", VARCHAR),
        ("CREATED_AT", TIMESTAMP),
    ),
)
BATCHES = TableSpec(
    "TRANSCRIPTION_BATCHES",
    _cols(
        "BATCH_ID",
        ("BATCH_ID", VARCHAR),
        ("STAGE", VARCHAR),
        ("PATTERN", VARCHAR),
        ("OPTIONS", VARIANT),
        ("FILES", NUMBER),
        ("CREATED_AT", TIMESTAMP),
    ),
)
TABLES = (JOBS, TRANSCRIPTIONS, TRANSLATIONS, BATCHES)
VIEWS = {
    "WHISPER_DEMO_OUTPUT": ("FILE_NAME", "TRANSCRIPTION", "LANGUAGE", "CREATED_AT"),
    "WHISPER_DEMO_TRANSLATION": (
        "FILE_NAME",
        "TRANSCRIPTION",
        "TRANSLATION",
        "SOURCE_LANGUAGE",
        "TARGET_LANGUAGE",
        "METHOD",
    ),
}


def snowpark_type(sql: str) -> DataType:
    from snowflake.snowpark import types as t

    return {
        VARCHAR: t.StringType(),
        BOOLEAN: t.BooleanType(),
        FLOAT: t.DoubleType(),
        NUMBER: t.LongType(),
        TIMESTAMP: t.TimestampType(t.TimestampTimeZone.TZ),
        VARIANT: t.VariantType(),
    }[sql]


def to_db(column: Column, value: Any) -> Any:
    """A Python value as Snowpark should write it into `column` (create_dataframe data)."""
    if value is None:
        return None
    if column.sql == TIMESTAMP:
        stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(value, JobStatus):
        return value.value
    if column.sql == FLOAT:
        return float(value)
    if column.sql == NUMBER:
        return int(value)
    return value


def from_db(column: Column, value: Any) -> Any:
    """A value `collect()` returned for `column`, as the Python side holds it."""
    if value is None:
        return None
    if column.sql == TIMESTAMP:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if column.sql == VARIANT:
        return json.loads(value) if isinstance(value, str) else value
    if column.sql == NUMBER:
        return int(value)
    if column.sql == FLOAT:
        return float(value)
    if column.sql == BOOLEAN:
        return bool(value)
    return value


def row_values(table: TableSpec, data: dict[str, Any]) -> list[Any]:
    """One row in column order from a dict keyed by field name (missing fields are NULL)."""
    return [to_db(c, data.get(c.field)) for c in table.columns]


def from_row(table: TableSpec, row: Any) -> dict[str, Any]:
    """A collected Row as a dict keyed by field name."""
    data = row.as_dict() if hasattr(row, "as_dict") else dict(row)
    return {c.field: from_db(c, data.get(c.name)) for c in table.columns}


def job_values(job: Job) -> list[Any]:
    task, translate_to = job.options.task, job.options.translate_to  # the analysts' columns
    return row_values(JOBS, {**job_to_record(job), "task": task, "translate_to": translate_to})


def job_from_row(row: Any) -> Job:
    """A TRANSCRIPTION_JOBS row as a job; an earlier release's row (OPTIONS NULL) has its options folded in
    from the columns it had (`LEGACY_JOB_COLUMNS`, when the table still has them)."""
    data = row.as_dict() if hasattr(row, "as_dict") else dict(row)
    record = from_row(JOBS, row)
    if record["options"] is None:
        record.update({name.lower(): data[name] for name in LEGACY_JOB_COLUMNS if name in data})
    return job_from_record(record)


def batch_values(batch: Batch) -> list[Any]:
    return row_values(BATCHES, {**batch.__dict__, "options": batch.options.stored()})


def transcript_values(job: Job, transcript: Transcript, created_at: datetime) -> list[Any]:
    """A TRANSCRIPTIONS row: SEGMENTS and BODY hold the JSON the API serves (`Segment.dump`, `Transcript.dump`), so
    a diarized job's `speaker` on each segment and word, and its `speakers` list in BODY, reach SQL as they are
    (no column of their own: a column the gateway checks at start would stop it on an account not yet migrated)."""
    body = transcript.dump()
    data = {
        "id": job.id,
        "source": job.source,
        "language": transcript.language,
        "text": transcript.text,
        "duration": transcript.duration,
        "segments": body["segments"],
        "body": body,
        "model": transcript.model or job.model,
        "created_at": created_at,
    }
    return row_values(TRANSCRIPTIONS, data)


def translation_values(job_id: str, translation: dict[str, Any], created_at: datetime) -> list[Any]:
    data = {**translation, "id": job_id, "created_at": created_at}
    return row_values(TRANSLATIONS, data)
