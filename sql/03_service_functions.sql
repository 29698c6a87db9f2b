-- 03_service_functions.sql: SQL functions that call the gateway service. Re-runnable (CREATE OR REPLACE).
--
-- Names: the service is WHISPER_GATEWAY and the functions call its endpoint `functions` (the names the
-- gateway's service specification declares). They are written as plain identifiers because SERVICE = and
-- ENDPOINT = take object names, not expressions; to deploy under other names, replace WHISPER_GATEWAY /
-- functions below.
-- `functions` is the gateway's second endpoint, NOT public: only Snowflake (these functions) and services of
-- the same owner reach it, so no one on the internet can call the service-function routes, which need no API
-- token (Snowflake sends none) and are the only place the gateway believes the caller's role. The gateway
-- answers /functions/* on that port only, and everything else (the API, the web page) only on the public
-- endpoint `api`, which requires the API token.
--   https://docs.snowflake.com/en/developer-guide/snowpark-container-services/specification-reference
--   https://docs.snowflake.com/en/developer-guide/snowpark-container-services/service-network-communications
-- Run in the database and schema of the service, after the service exists:
--   snow sql -f sql/03_service_functions.sql --database WHISPER_DB --schema PUBLIC
-- The role running this needs USAGE on the `functions` endpoint (the service role that grants it, or
-- ownership of the service).
--   https://docs.snowflake.com/en/release-notes/bcr-bundles/2024_04/bcr-1611
--
-- Protocol (service functions): Snowflake POSTs batches {"data": [[row, arg1, ...], ...]} to the path in AS
-- and expects {"data": [[row, value], ...]} back, every row, in order. It retries a batch on 429/5xx, with
-- the same sf-external-function-query-batch-id header, which the gateway uses to make retries idempotent.
-- Per-row failures come back as {"error": {"code", "message"}} in that row's value, so one
-- bad file does not fail the query.
--
-- Syntax: CREATE FUNCTION (Snowpark Container Services),
--   https://docs.snowflake.com/en/sql-reference/sql/create-function-spcs

-- TRANSCRIBE(source, language): transcribe one file and wait for it.
--   source:   '@AUDIO_FILES_STAGE/<relative path>' (a stage the gateway mounts, or reads with Snowpark)
--   language: ISO-639-1 code ('hi', 'en', ...) or 'auto' for detection (or TRANSCRIBE(source), below)
--   returns:  {"text", "language", "duration", "segments"} or {"error": {...}}
-- Asynchronous protocol: when a batch's rows are not done within the gateway's FUNCTION_WAIT_S (10 s), the
-- gateway answers 202 and Snowflake polls with GET (same path, same sf-external-function-query-batch-id)
-- until a 200 carries the rows; no HTTP request stays open for long.
--   https://docs.snowflake.com/en/sql-reference/external-functions-implementation
-- BATCH_TIMEOUT_SECS bounds a whole batch, its retries and polls included, so it is the longest one batch
-- of MAX_BATCH_ROWS files may take end to end; MAX_BATCH_RETRIES is the number of retries of a batch that
-- answered 404/429/5xx (a retry reuses the batch's jobs: the batch id is their idempotency key).
--   https://docs.snowflake.com/en/release-notes/bcr-bundles/2025_02/bcr-1938
-- MAX_BATCH_ROWS is small: every row is minutes of GPU work, and small batches spread the rows of one
-- query over the gateway's concurrent requests (and so over the Whisper replicas); a file longer than a
-- batch may take belongs in TRANSCRIBE_SUBMIT.
-- CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE) sends the caller's user and role with every batch (headers
-- sf-context-current-user, sf-context-current-role): jobs record who asked, reads are scoped to that user,
-- and SPCS_WHISPER_ADMIN_ROLE is matched against the role. Every function sends them: the gateway refuses
-- (400) a service-function request that names no user, or names a user or role twice.
--   https://docs.snowflake.com/en/sql-reference/sql/create-function-spcs
CREATE OR REPLACE FUNCTION TRANSCRIBE(source VARCHAR, language VARCHAR)
  RETURNS VARIANT
  SERVICE = WHISPER_GATEWAY
  ENDPOINT = functions
  COMMENT = 'spcs-whisper: transcribe a staged audio/video file; returns {text, language, duration, segments}'
  CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE)
  MAX_BATCH_ROWS = 8
  MAX_BATCH_RETRIES = 3
  BATCH_TIMEOUT_SECS = 3600
  AS '/functions/transcribe';

-- TRANSCRIBE(source): the same with language detection. Functions are resolved by name and argument
-- types, so this overload can share the path: its rows arrive as [row, source] (no language) and the
-- gateway treats the missing language as 'auto'.
CREATE OR REPLACE FUNCTION TRANSCRIBE(source VARCHAR)
  RETURNS VARIANT
  SERVICE = WHISPER_GATEWAY
  ENDPOINT = functions
  COMMENT = 'spcs-whisper: transcribe a staged audio/video file, language detected'
  CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE)
  MAX_BATCH_ROWS = 8
  MAX_BATCH_RETRIES = 3
  BATCH_TIMEOUT_SECS = 3600
  AS '/functions/transcribe';

-- TRANSCRIBE(source, options): the same with any job options, as one OBJECT, e.g. who spoke when:
--   TRANSCRIBE('@AUDIO_FILES_STAGE/call.mp4', OBJECT_CONSTRUCT('speakers', TRUE, 'language', 'hi'))
--   options:  the fields of POST /v1/jobs by name (keys case-insensitive): language, task ('transcribe' |
--             'translate'), word_timestamps, prompt, temperature, hotwords, vad_filter, vad_threshold,
--             vad_min_silence_ms, vad_speech_pad_ms, translate_to, model, and speakers: TRUE (or 'auto') for a
--             detected count, a count (3), or a range ('2-4', or OBJECT_CONSTRUCT('min', 2, 'max', 4)).
--             An unknown key or a bad value is that row's {"error": {"code": "validation_error", ...}}.
--   returns:  as above, plus "speakers" (the labels, in order of first appearance) and a "speaker"
--             ('SPEAKER_00', ...) on every segment (and word), segments split where the speaker changes; plus
--             "translation" (its text) when the options name translate_to.
-- Snowflake sends an OBJECT argument as a JSON object, NULL as JSON null ("Data format sent by Snowflake"):
--   https://docs.snowflake.com/en/sql-reference/external-functions-data-format
-- Overloading: functions are resolved by name AND argument types, so TRANSCRIBE(VARCHAR, OBJECT) lives beside
-- TRANSCRIBE(VARCHAR, VARCHAR) (https://docs.snowflake.com/en/sql-reference/sql/create-function-spcs, "name").
-- Snowflake warns that overloading combined with implicit conversion (coercion) can pick an unexpected
-- signature; an argument of an exact declared type picks its own (the page's ADD5(NUMBER) / ADD5(VARCHAR)
-- example: ADD5(1) and ADD5('1') each call their own), so OBJECT_CONSTRUCT(...) calls this one and a string
-- literal or VARCHAR column the language one:
--   https://docs.snowflake.com/en/developer-guide/udf-stored-procedure-naming-conventions
--   https://docs.snowflake.com/en/sql-reference/data-type-conversion (coercion)
-- The cases coercion could resolve either way cannot change a row's meaning, because both overloads call the
-- same path and the gateway reads the value, not the signature: a JSON object (or its JSON text, a VARIANT
-- coerced to VARCHAR) is options, any other string a language, null detection. Still, for detection write
-- TRANSCRIBE(source) rather than an untyped NULL, and cast a VARIANT argument (col::STRING for a language,
-- col::OBJECT for options) so Snowflake never has to choose.
CREATE OR REPLACE FUNCTION TRANSCRIBE(source VARCHAR, options OBJECT)
  RETURNS VARIANT
  SERVICE = WHISPER_GATEWAY
  ENDPOINT = functions
  COMMENT = 'spcs-whisper: transcribe a staged audio/video file with job options, e.g. OBJECT_CONSTRUCT(''speakers'', TRUE)'
  CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE)
  MAX_BATCH_ROWS = 8
  MAX_BATCH_RETRIES = 3
  BATCH_TIMEOUT_SECS = 3600
  AS '/functions/transcribe';

-- TRANSCRIBE_SUBMIT(source, language, translate_to): fire and forget. Stores the job durably and answers at
-- once with {"job_id", "status"}; the transcript (and translation, when translate_to is not NULL) lands in
-- TRANSCRIPTIONS / TRANSLATIONS. Submitting is cheap, so batches can be larger.
CREATE OR REPLACE FUNCTION TRANSCRIBE_SUBMIT(source VARCHAR, language VARCHAR, translate_to VARCHAR)
  RETURNS VARIANT
  SERVICE = WHISPER_GATEWAY
  ENDPOINT = functions
  COMMENT = 'spcs-whisper: submit a transcription job; returns {job_id, status}'
  CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE)
  MAX_BATCH_ROWS = 100
  AS '/functions/submit';

-- TRANSCRIBE_SUBMIT(source, options): the same with the options of TRANSCRIBE(source, options) (translate_to
-- among them), e.g. TRANSCRIBE_SUBMIT('@AUDIO_FILES_STAGE/long.mp4', OBJECT_CONSTRUCT('speakers', '2-4')).
-- Two arguments against the other's three: no call can match both.
CREATE OR REPLACE FUNCTION TRANSCRIBE_SUBMIT(source VARCHAR, options OBJECT)
  RETURNS VARIANT
  SERVICE = WHISPER_GATEWAY
  ENDPOINT = functions
  COMMENT = 'spcs-whisper: submit a transcription job with job options; returns {job_id, status}'
  CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE)
  MAX_BATCH_ROWS = 100
  AS '/functions/submit';

-- TRANSCRIPTION_STATUS(job_id): {"job_id", "status", "progress", "error", ...} of a submitted job;
-- status is queued | running | transcribed | translating | succeeded | failed | cancelled.
CREATE OR REPLACE FUNCTION TRANSCRIPTION_STATUS(job_id VARCHAR)
  RETURNS VARIANT
  SERVICE = WHISPER_GATEWAY
  ENDPOINT = functions
  COMMENT = 'spcs-whisper: status and progress of a transcription job'
  CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE)
  MAX_BATCH_ROWS = 100
  AS '/functions/job_status';

-- WHISPER_DRAIN(timeout_s): the first step of `make teardown`, for the deployer role (the gateway's
-- SPCS_WHISPER_ADMIN_ROLE; no grant to analysts). The gateway claims no more jobs, lets the running ones finish
-- for up to timeout_s, exports everything to the tables and answers {"drained", "running", "queued",
-- "pending_exports"}; only a drained gateway's block volume is dropped (DROP SERVICE ... FORCE).
CREATE OR REPLACE FUNCTION WHISPER_DRAIN(timeout_s NUMBER)
  RETURNS VARIANT
  SERVICE = WHISPER_GATEWAY
  ENDPOINT = functions
  COMMENT = 'spcs-whisper: stop claiming jobs, finish and export what runs (before a teardown)'
  CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE)
  MAX_BATCH_ROWS = 1
  AS '/functions/drain';

-- Grants (uncomment and set the role once it exists; roles are created by the deploy scripts).
-- Analysts need USAGE on each function signature, plus USAGE on the database and schema; reading the
-- result tables needs SELECT on them (see the grants script).
-- SET ANALYST_ROLE = 'WHISPER_ANALYST';
-- GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR, VARCHAR) TO ROLE IDENTIFIER($ANALYST_ROLE);
-- GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR) TO ROLE IDENTIFIER($ANALYST_ROLE);
-- GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR, OBJECT) TO ROLE IDENTIFIER($ANALYST_ROLE);
-- GRANT USAGE ON FUNCTION TRANSCRIBE_SUBMIT(VARCHAR, VARCHAR, VARCHAR) TO ROLE IDENTIFIER($ANALYST_ROLE);
-- GRANT USAGE ON FUNCTION TRANSCRIBE_SUBMIT(VARCHAR, OBJECT) TO ROLE IDENTIFIER($ANALYST_ROLE);
-- GRANT USAGE ON FUNCTION TRANSCRIPTION_STATUS(VARCHAR) TO ROLE IDENTIFIER($ANALYST_ROLE);
