-- 01_tables.sql: the tables and views of the Snowflake store. Re-runnable (IF NOT EXISTS / OR REPLACE).
--
-- Run in the database and schema the service uses (SNOWFLAKE_DATABASE / SNOWFLAKE_SCHEMA), e.g.
--   snow sql -f sql/01_tables.sql --database WHISPER_DB --schema PUBLIC
-- Only `make deploy` runs it: the gateway never runs DDL on an account. At start it checks that these tables
-- and columns exist and refuses to start, naming what is missing, when they do not.
-- The views are replaced WITH COPY GRANTS, so re-running this script keeps the analysts' SELECT on them
-- (https://docs.snowflake.com/en/sql-reference/sql/create-view).
--
-- The column lists are mirrored in service/storage/snowflake_schema.py (a unit test keeps them equal).
-- Timestamps are TIMESTAMP_TZ and always written in UTC. VARIANT columns hold JSON objects or arrays.
-- Snowflake does not enforce PRIMARY KEY or UNIQUE: the service keeps JOB_ID unique and makes the
-- IDEMPOTENCY_KEY check and the one-result-per-job rule with MERGE statements.

-- One row per job: an upload or a stage file to transcribe, with its state machine
-- (queued -> running -> transcribed -> translating -> succeeded | failed | cancelled).
-- ATTEMPTS counts runs; together with STATUS it fences writes from stale workers.
-- NOT_BEFORE is the retry backoff; PROGRESS is the share of the audio done by the running attempt.
-- OPTIONS holds what the job asked of the model, the options that differ from their defaults (language, task,
-- word_timestamps, prompt, temperature, hotwords, vad_*, speakers, translate_to), e.g. OPTIONS:prompt::STRING
-- (path syntax and cast: https://docs.snowflake.com/en/user-guide/querying-semistructured). OPTIONS:speakers is
-- text: 'auto', a count ('3') or a range ('2-4'); absent when the job did not ask who spoke when.
-- TASK and TRANSLATE_TO repeat options.task / options.translate_to as plain columns for SQL filters.
-- LANGUAGE is the language asked for until the job is transcribed, then the detected one.
CREATE TABLE IF NOT EXISTS TRANSCRIPTION_JOBS (
  JOB_ID VARCHAR NOT NULL PRIMARY KEY,
  STATUS VARCHAR NOT NULL,
  SOURCE VARCHAR NOT NULL,
  SOURCE_KIND VARCHAR NOT NULL,
  LANGUAGE VARCHAR,
  TASK VARCHAR NOT NULL,
  TRANSLATE_TO VARCHAR,
  MODEL VARCHAR,
  SUBMITTED_AT TIMESTAMP_TZ NOT NULL,
  STARTED_AT TIMESTAMP_TZ,
  FINISHED_AT TIMESTAMP_TZ,
  NOT_BEFORE TIMESTAMP_TZ,
  ATTEMPTS NUMBER(38, 0) NOT NULL,
  ERROR_CODE VARCHAR,
  ERROR_MESSAGE VARCHAR,
  AUDIO_SECONDS FLOAT,
  PROGRESS FLOAT,
  BYTES NUMBER(38, 0),
  IDEMPOTENCY_KEY VARCHAR,
  BATCH_ID VARCHAR,
  OWNER VARCHAR,
  TIMINGS VARIANT,
  OPTIONS VARIANT
)
COMMENT = 'spcs-whisper: transcription jobs and their state';
-- Columns added after the first release, for tables created by an older version (re-runnable).
ALTER TABLE TRANSCRIPTION_JOBS ADD COLUMN IF NOT EXISTS OWNER VARCHAR;
-- ADD [ COLUMN ] [ IF NOT EXISTS ]: a no-op on a table that has it, so re-running `make deploy` is safe;
-- a column added this way is nullable and old rows read NULL (https://docs.snowflake.com/en/sql-reference/sql/alter-table).
ALTER TABLE TRANSCRIPTION_JOBS ADD COLUMN IF NOT EXISTS OPTIONS VARIANT;
-- Tables made before OPTIONS keep WORD_TIMESTAMPS, PROMPT and TEMPERATURE (nullable, no longer written; their
-- old rows keep their values). Once those are no longer needed:
--   ALTER TABLE TRANSCRIPTION_JOBS DROP COLUMN WORD_TIMESTAMPS, PROMPT, TEMPERATURE;
-- (DROP [ COLUMN ] [ IF EXISTS ] <col_name> [, ...], same page.)

-- One row per transcribed job (at most one: written with MERGE on JOB_ID). TEXT is the whole transcript,
-- SEGMENTS the timed segments (and words when asked for), BODY the whole document the API serves.
-- A job that asked for speakers has SEGMENTS[i]:speaker ('SPEAKER_00', ...; also on each word) and
-- BODY:speakers (the ARRAY of labels, in order of first appearance). Kept in the VARIANTs rather than a column
-- of their own: the gateway checks these columns at start and refuses to run on a table without one, so a new
-- column would stop a gateway whose image was upgraded before this script ran again.
CREATE TABLE IF NOT EXISTS TRANSCRIPTIONS (
  JOB_ID VARCHAR NOT NULL PRIMARY KEY,
  SOURCE VARCHAR,
  LANGUAGE VARCHAR,
  TEXT VARCHAR,
  DURATION FLOAT,
  SEGMENTS VARIANT,
  BODY VARIANT,
  MODEL VARCHAR,
  CREATED_AT TIMESTAMP_TZ
)
COMMENT = 'spcs-whisper: one transcript per job';

-- One row per translated job (at most one). METHOD: cortex.translate, cortex.complete:<model> or whisper.
CREATE TABLE IF NOT EXISTS TRANSLATIONS (
  JOB_ID VARCHAR NOT NULL PRIMARY KEY,
  SOURCE_LANGUAGE VARCHAR,
  TARGET_LANGUAGE VARCHAR NOT NULL,
  TEXT VARCHAR,
  METHOD VARCHAR,
  CREATED_AT TIMESTAMP_TZ
)
COMMENT = 'spcs-whisper: one translation per job';

-- One row per POST /v1/batches: every file under STAGE matching PATTERN became a job with this BATCH_ID.
-- OPTIONS holds the job options the batch applied to every file (language, task, translate_to, ...).
CREATE TABLE IF NOT EXISTS TRANSCRIPTION_BATCHES (
  BATCH_ID VARCHAR NOT NULL PRIMARY KEY,
  STAGE VARCHAR NOT NULL,
  PATTERN VARCHAR,
  OPTIONS VARIANT,
  FILES NUMBER(38, 0),
  CREATED_AT TIMESTAMP_TZ
)
COMMENT = 'spcs-whisper: stage batches';

-- The original notebook's output table, as a view: one row per transcript.
-- FILE_NAME is the last part of SOURCE (the stage path or the uploaded file name).
CREATE OR REPLACE VIEW WHISPER_DEMO_OUTPUT (FILE_NAME, TRANSCRIPTION, LANGUAGE, CREATED_AT) COPY GRANTS AS
SELECT
  SPLIT_PART(t.SOURCE, '/', -1),
  t.TEXT,
  t.LANGUAGE,
  t.CREATED_AT
FROM TRANSCRIPTIONS AS t;

-- The original notebook's translation table, as a view: transcripts that have a translation.
CREATE OR REPLACE VIEW WHISPER_DEMO_TRANSLATION (
  FILE_NAME, TRANSCRIPTION, TRANSLATION, SOURCE_LANGUAGE, TARGET_LANGUAGE, METHOD
) COPY GRANTS AS
SELECT
  SPLIT_PART(t.SOURCE, '/', -1),
  t.TEXT,
  tr.TEXT,
  tr.SOURCE_LANGUAGE,
  tr.TARGET_LANGUAGE,
  tr.METHOD
FROM TRANSCRIPTIONS AS t
JOIN TRANSLATIONS AS tr ON tr.JOB_ID = t.JOB_ID;
