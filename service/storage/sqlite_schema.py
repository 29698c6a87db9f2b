"""The SQLite store's tables, the columns added since the first release, and job <-> row mapping."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from typing import Any

from service.jobs.model import Batch, Job
from service.storage.records import job_from_record, job_to_record

# Idempotency keys are unique per owner (`coalesce(owner, '')`, the index in INDEXES), never across owners: a
# user's key must neither reveal nor block another user's. Databases from before kept `idempotency_key TEXT
# UNIQUE` on the column, which SQLite cannot drop: `scope_idempotency_keys` rebuilds such a table once.
JOBS_TABLE = """
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
    idempotency_key TEXT,
    timings TEXT NOT NULL DEFAULT '{}',
    source_kind TEXT NOT NULL DEFAULT 'upload',
    translate_to TEXT,
    batch_id TEXT,
    owner TEXT,
    options TEXT NOT NULL DEFAULT '{}'
);
"""
SCHEMA = (
    JOBS_TABLE
    + """
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
)
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id, submitted_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_idempotency_key ON jobs (coalesce(owner, ''), idempotency_key);
"""
IDEMPOTENCY_WHERE = "coalesce(owner, '') = ? AND idempotency_key = ?"  # uses jobs_owner_idempotency_key
GLOBAL_KEY = re.compile(r"\bidempotency_key\s+TEXT\s+UNIQUE\b", re.IGNORECASE)


def scope_idempotency_keys(conn: sqlite3.Connection) -> bool:
    """Rebuild a `jobs` table whose idempotency keys are unique across owners (before per-owner keys), the way
    SQLite documents for changing a constraint (https://www.sqlite.org/lang_altertable.html#otheralter): a new
    table, the rows copied, the old one dropped, the new one renamed; foreign keys off meanwhile, so dropping the
    old table deletes no transcript. Runs in autocommit mode, after MIGRATIONS; True if it rebuilt."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
    if row is None or not GLOBAL_KEY.search(row[0]):
        return False
    columns = ", ".join(r[1] for r in conn.execute("PRAGMA table_info(jobs)"))
    conn.execute("PRAGMA foreign_keys=OFF")  # no effect inside a transaction: set before BEGIN
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(JOBS_TABLE.replace("CREATE TABLE IF NOT EXISTS jobs (", "CREATE TABLE jobs_rebuilt (", 1))
            conn.execute(f"INSERT INTO jobs_rebuilt ({columns}) SELECT {columns} FROM jobs")
            conn.execute("DROP TABLE jobs")
            conn.execute("ALTER TABLE jobs_rebuilt RENAME TO jobs")
            if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise sqlite3.IntegrityError("foreign keys broken by the jobs table rebuild")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    return True


# Columns added after the first release: (name, declaration), added to older databases at open.
MIGRATIONS = (
    ("prompt", "TEXT"),
    ("temperature", "REAL NOT NULL DEFAULT 0"),
    ("progress", "REAL NOT NULL DEFAULT 0"),
    ("source_kind", "TEXT NOT NULL DEFAULT 'upload'"),
    ("translate_to", "TEXT"),
    ("batch_id", "TEXT"),
    ("owner", "TEXT"),
    ("options", "TEXT NOT NULL DEFAULT '{}'"),
)


def row_to_batch(row: sqlite3.Row) -> Batch:
    data = dict(row)
    data["options"] = json.loads(data["options"])
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return Batch(**data)


def row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["timings"] = json.loads(data["timings"] or "{}")
    data["options"] = json.loads(data.get("options") or "{}")
    return job_from_record(data)


def job_to_row(job: Job) -> dict[str, Any]:
    data = job_to_record(job)
    data["word_timestamps"] = int(job.word_timestamps)
    data["timings"] = json.dumps(job.timings)
    data["options"] = json.dumps(job.options)
    return data
