"""The SQLite store's tables, the migrations of databases an earlier release wrote, and job <-> row mapping.

A job's options are one JSON column (`options`: `JobOptions.stored()`, the options that differ from their
defaults); only what queries filter or order on has a column of its own (status, owner, batch_id,
idempotency_key, submitted_at, ...). `language` is the job's language: the one asked for, then the detected one.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from typing import Any

from service.jobs.model import Batch, Job
from service.storage.records import (
    LEGACY_OPTION_FIELDS,
    job_from_record,
    job_to_record,
    options_from_stored,
    record_options,
)

# Idempotency keys are unique per owner (`coalesce(owner, '')`, the index in INDEXES), never across owners: a
# user's key must neither reveal nor block another user's. Databases from before kept `idempotency_key TEXT
# UNIQUE` on the column, which SQLite cannot drop: `rebuild_jobs` rebuilds such a table once.
JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    language TEXT,
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
    batch_id TEXT,
    owner TEXT,
    options TEXT NOT NULL DEFAULT '{}',
    lane TEXT NOT NULL DEFAULT 'bulk'
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
# After MIGRATIONS (an older database gets its `lane` column first). `jobs_claim` serves fair claims
# (service/storage/sqlite.py, FAIR_PICK): a lane's owners one by one, and each owner's oldest job of the lane.
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id, submitted_at, id);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, lane, owner, submitted_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_idempotency_key ON jobs (coalesce(owner, ''), idempotency_key);
"""
JOB_COLUMNS = tuple(re.findall(r"^    (\w+) ", JOBS_TABLE, re.MULTILINE))
IDEMPOTENCY_WHERE = "coalesce(owner, '') = ? AND idempotency_key = ?"  # uses jobs_owner_idempotency_key
GLOBAL_KEY = re.compile(r"\bidempotency_key\s+TEXT\s+UNIQUE\b", re.IGNORECASE)


def rebuild_jobs(conn: sqlite3.Connection) -> bool:
    """Rebuild a `jobs` table whose idempotency keys are unique across owners (before per-owner keys), or that
    still has folded option columns (SQLite < 3.35 cannot drop them), the way SQLite documents for changing a
    constraint (https://www.sqlite.org/lang_altertable.html#otheralter): a new table, the rows copied (the
    columns it has), the old one dropped, the new one renamed; foreign keys off meanwhile, so dropping the old
    table deletes no transcript. Runs in autocommit mode, after `fold_options`; True if it rebuilt."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
    present = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    if row is None or not (GLOBAL_KEY.search(row[0]) or present & set(FOLDED)):
        return False
    columns = ", ".join(c for c in JOB_COLUMNS if c in present)
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


# Columns added after the first release: (name, declaration), added to older databases at open (before
# `fold_options`, which reads `options`).
MIGRATIONS = (
    ("progress", "REAL NOT NULL DEFAULT 0"),
    ("source_kind", "TEXT NOT NULL DEFAULT 'upload'"),
    ("batch_id", "TEXT"),
    ("owner", "TEXT"),
    ("options", "TEXT NOT NULL DEFAULT '{}'"),
    ("lane", "TEXT NOT NULL DEFAULT 'bulk'"),  # jobs queued before lanes wait as bulk
)
# Options that were columns of their own before `options` held them all (`options` held only the rest).
FOLDED = LEGACY_OPTION_FIELDS
DROP_COLUMN = (3, 35, 0)  # ALTER TABLE DROP COLUMN: https://www.sqlite.org/lang_altertable.html#altertabdropcol


def fold_options(conn: sqlite3.Connection) -> bool:
    """Move the option columns of an earlier release (`FOLDED`) into the `options` JSON and drop them, in one
    transaction (a job not transcribed yet also gets its `language`, still the one asked for, as an option).
    DROP COLUMN needs SQLite >= 3.35; an older one keeps the columns for `rebuild_jobs` to leave behind.
    Idempotent: folding again gives the same options. Runs in autocommit mode, after MIGRATIONS and
    before `rebuild_jobs`; True if it folded anything."""
    present = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    old = [name for name in FOLDED if name in present]
    if not old:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(f"SELECT id, status, language, options, {', '.join(old)} FROM jobs").fetchall()
        updates = []
        for row in rows:
            values = {**dict(row), "options": json.loads(row["options"] or "{}")}
            updates.append((json.dumps(record_options(values).stored(), ensure_ascii=False), row["id"]))
        conn.executemany("UPDATE jobs SET options = ? WHERE id = ?", updates)
        if sqlite3.sqlite_version_info >= DROP_COLUMN:
            for name in old:
                conn.execute(f"ALTER TABLE jobs DROP COLUMN {name}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def row_to_batch(row: sqlite3.Row) -> Batch:
    data = dict(row)
    data["options"] = options_from_stored(json.loads(data["options"]))
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return Batch(**data)


def row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["timings"] = json.loads(data["timings"] or "{}")
    data["options"] = json.loads(data.get("options") or "{}")
    return job_from_record(data)


def job_to_row(job: Job) -> dict[str, Any]:
    data = job_to_record(job)
    data["timings"] = json.dumps(data["timings"])
    data["options"] = json.dumps(data["options"], ensure_ascii=False)
    return data
