"""The SQLite store's tables, the columns added since the first release, and job <-> row mapping."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from service.jobs.model import Job
from service.storage.records import job_from_record, job_to_record

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    language TEXT,
    task TEXT NOT NULL,
    word_timestamps INTEGER NOT NULL,
    prompt TEXT,
    temperature REAL NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT,
    error_code TEXT,
    error_message TEXT,
    audio_seconds REAL,
    progress REAL NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    timings TEXT NOT NULL DEFAULT '{}',
    source_kind TEXT NOT NULL DEFAULT 'upload',
    translate_to TEXT,
    batch_id TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_submitted ON jobs (status, submitted_at);
CREATE INDEX IF NOT EXISTS jobs_submitted ON jobs (submitted_at, id);
CREATE TABLE IF NOT EXISTS transcripts (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    language TEXT,
    duration REAL,
    segments TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS translations (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    source_language TEXT,
    target_language TEXT NOT NULL,
    text TEXT NOT NULL,
    method TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    pattern TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at TEXT NOT NULL,
    files INTEGER NOT NULL
);
"""
INDEXES = "CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id, submitted_at, id);"

# Columns added after the first release: (name, declaration), added to older databases at open.
MIGRATIONS = (
    ("prompt", "TEXT"),
    ("temperature", "REAL NOT NULL DEFAULT 0"),
    ("progress", "REAL NOT NULL DEFAULT 0"),
    ("source_kind", "TEXT NOT NULL DEFAULT 'upload'"),
    ("translate_to", "TEXT"),
    ("batch_id", "TEXT"),
    ("owner", "TEXT"),
)


def row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["timings"] = json.loads(data["timings"] or "{}")
    return job_from_record(data)


def job_to_row(job: Job) -> dict[str, Any]:
    data = job_to_record(job)
    data["word_timestamps"] = int(job.word_timestamps)
    data["timings"] = json.dumps(job.timings)
    return data
