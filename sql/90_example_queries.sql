-- 90_example_queries.sql: an analyst's queries against the service. Not part of the deployment: run the
-- pieces you need, in the database and schema of the service (after 01..03 and the deploy scripts).
-- The MY_* tables are the analyst's own; everything else belongs to the service.

-- 1. What is on the stage. Internal stages do not refresh their directory table by themselves: after
--    PUT (e.g. `snow stage copy ./videos @AUDIO_FILES_STAGE`), refresh it first.
ALTER STAGE AUDIO_FILES_STAGE REFRESH;

SELECT RELATIVE_PATH, SIZE, LAST_MODIFIED
FROM DIRECTORY(@AUDIO_FILES_STAGE)
WHERE RELATIVE_PATH ILIKE '%.mp4'
ORDER BY RELATIVE_PATH;

-- 2. One file, synchronously: the call returns when the transcript is ready.
SELECT TRANSCRIBE('@AUDIO_FILES_STAGE/interview.mp4', 'hi') AS TRANSCRIPT;

-- Language detected, just the text.
SELECT TRANSCRIBE('@AUDIO_FILES_STAGE/interview.mp4'):text::STRING AS TEXT;

-- 3. Every MP4 on the stage, into a table (one service call per file, batched by Snowflake).
--    A file that cannot be transcribed yields {"error": {...}} in its row instead of failing the query.
CREATE OR REPLACE TABLE MY_TRANSCRIPTS AS
SELECT
  d.RELATIVE_PATH AS FILE_NAME,
  TRANSCRIBE('@AUDIO_FILES_STAGE/' || d.RELATIVE_PATH, 'hi') AS TRANSCRIPT,
  CURRENT_TIMESTAMP() AS TRANSCRIBED_AT
FROM DIRECTORY(@AUDIO_FILES_STAGE) AS d
WHERE d.RELATIVE_PATH ILIKE '%.mp4';

-- 4. The text and the details out of the VARIANT.
SELECT
  FILE_NAME,
  TRANSCRIPT:text::STRING AS TEXT,
  TRANSCRIPT:language::STRING AS LANGUAGE,
  TRANSCRIPT:duration::FLOAT AS AUDIO_SECONDS,
  ARRAY_SIZE(TRANSCRIPT:segments) AS SEGMENT_COUNT
FROM MY_TRANSCRIPTS
WHERE TRANSCRIPT:error IS NULL
ORDER BY FILE_NAME;

-- Files that failed, and why.
SELECT FILE_NAME, TRANSCRIPT:error:code::STRING AS ERROR_CODE, TRANSCRIPT:error:message::STRING AS MESSAGE
FROM MY_TRANSCRIPTS
WHERE TRANSCRIPT:error IS NOT NULL;

-- Timed segments, one row each (e.g. to build subtitles or search within a video).
SELECT
  t.FILE_NAME,
  s.value:start::FLOAT AS START_S,
  s.value:end::FLOAT AS END_S,
  s.value:text::STRING AS SEGMENT_TEXT
FROM MY_TRANSCRIPTS AS t,
  LATERAL FLATTEN(input => t.TRANSCRIPT:segments) AS s
ORDER BY t.FILE_NAME, START_S;

-- Who spoke when: any job option goes in ONE object after the source (an unknown key or a bad value answers
-- that row's {"error": {"code": "validation_error", ...}}). 'speakers': TRUE finds how many speakers there
-- are; a count (3) or a range ('2-4') bounds it. The result gains "speakers" (the labels) and every segment a
-- "speaker" ('SPEAKER_00', ...), segments split where the speaker changes.
CREATE OR REPLACE TABLE MY_SPEAKER_TRANSCRIPTS AS
SELECT
  d.RELATIVE_PATH AS FILE_NAME,
  TRANSCRIBE(
    '@AUDIO_FILES_STAGE/' || d.RELATIVE_PATH,
    OBJECT_CONSTRUCT('speakers', TRUE, 'language', 'hi')
  ) AS TRANSCRIPT
FROM DIRECTORY(@AUDIO_FILES_STAGE) AS d
WHERE d.RELATIVE_PATH ILIKE '%.mp4';

-- One row per segment: who, from when to when, what.
SELECT
  t.FILE_NAME,
  s.value:speaker::STRING AS SPEAKER,
  s.value:start::FLOAT AS START_S,
  s.value:end::FLOAT AS END_S,
  s.value:text::STRING AS SEGMENT_TEXT
FROM MY_SPEAKER_TRANSCRIPTS AS t,
  LATERAL FLATTEN(input => t.TRANSCRIPT:segments) AS s
WHERE t.TRANSCRIPT:error IS NULL
ORDER BY t.FILE_NAME, START_S;

-- How long each speaker talked, per file.
SELECT
  t.FILE_NAME,
  s.value:speaker::STRING AS SPEAKER,
  SUM(s.value:end::FLOAT - s.value:start::FLOAT) AS SECONDS,
  COUNT(*) AS SEGMENTS
FROM MY_SPEAKER_TRANSCRIPTS AS t,
  LATERAL FLATTEN(input => t.TRANSCRIPT:segments) AS s
WHERE t.TRANSCRIPT:error IS NULL
GROUP BY t.FILE_NAME, SPEAKER
ORDER BY t.FILE_NAME, SECONDS DESC;

-- 5. Fire and forget: submit every MP4 (transcribe in Hindi, translate to English) and come back later.
--    The call returns at once with {"job_id", "status"}; the jobs run in the service.
CREATE OR REPLACE TABLE MY_SUBMITTED_JOBS AS
SELECT
  d.RELATIVE_PATH AS FILE_NAME,
  TRANSCRIBE_SUBMIT('@AUDIO_FILES_STAGE/' || d.RELATIVE_PATH, 'hi', 'en') AS SUBMITTED
FROM DIRECTORY(@AUDIO_FILES_STAGE) AS d
WHERE d.RELATIVE_PATH ILIKE '%.mp4';

SELECT FILE_NAME, SUBMITTED:job_id::STRING AS JOB_ID, SUBMITTED:status::STRING AS STATUS
FROM MY_SUBMITTED_JOBS;

-- The same with job options as one object: a panel of two to four speakers, translated into English.
SELECT TRANSCRIBE_SUBMIT(
  '@AUDIO_FILES_STAGE/panel.mp4',
  OBJECT_CONSTRUCT('speakers', '2-4', 'language', 'hi', 'translate_to', 'en')
):job_id::STRING AS JOB_ID;

-- Poll: progress is the share of the audio done (0..1); text and translation appear once they exist.
SELECT
  FILE_NAME,
  JOB:status::STRING AS STATUS,
  JOB:progress::FLOAT AS PROGRESS,
  JOB:error:message::STRING AS ERROR,
  JOB:text::STRING AS TEXT,
  JOB:translation::STRING AS TRANSLATION
FROM (
  SELECT FILE_NAME, TRANSCRIPTION_STATUS(SUBMITTED:job_id::STRING) AS JOB
  FROM MY_SUBMITTED_JOBS
)
ORDER BY FILE_NAME;

-- The same from the jobs table, without calling the service.
SELECT
  j.JOB_ID, j.SOURCE, j.STATUS, j.PROGRESS, j.ATTEMPTS, j.AUDIO_SECONDS, j.SUBMITTED_AT, j.FINISHED_AT,
  j.ERROR_CODE, j.ERROR_MESSAGE
FROM TRANSCRIPTION_JOBS AS j
JOIN MY_SUBMITTED_JOBS AS m ON j.JOB_ID = m.SUBMITTED:job_id::STRING
ORDER BY j.SUBMITTED_AT;

-- 6. The results, once the jobs have succeeded.
SELECT t.JOB_ID, t.SOURCE, t.LANGUAGE, t.TEXT, t.MODEL, t.CREATED_AT
FROM TRANSCRIPTIONS AS t
JOIN MY_SUBMITTED_JOBS AS m ON t.JOB_ID = m.SUBMITTED:job_id::STRING
ORDER BY t.SOURCE;

SELECT tr.JOB_ID, tr.SOURCE_LANGUAGE, tr.TARGET_LANGUAGE, tr.METHOD, tr.TEXT, tr.CREATED_AT
FROM TRANSLATIONS AS tr
JOIN MY_SUBMITTED_JOBS AS m ON tr.JOB_ID = m.SUBMITTED:job_id::STRING
ORDER BY tr.JOB_ID;

-- Who spoke when, from the results table: SEGMENTS keeps each segment's speaker, BODY:speakers the labels, and
-- the job's OPTIONS:speakers what was asked ('auto', '3' or '2-4'; absent when speakers were not asked for).
SELECT
  t.JOB_ID,
  t.SOURCE,
  j.OPTIONS:speakers::STRING AS SPEAKERS_ASKED,
  ARRAY_SIZE(t.BODY:speakers) AS SPEAKERS_FOUND,
  s.value:speaker::STRING AS SPEAKER,
  s.value:start::FLOAT AS START_S,
  s.value:end::FLOAT AS END_S,
  s.value:text::STRING AS SEGMENT_TEXT
FROM TRANSCRIPTIONS AS t
JOIN TRANSCRIPTION_JOBS AS j ON j.JOB_ID = t.JOB_ID,
  LATERAL FLATTEN(input => t.SEGMENTS) AS s
WHERE j.OPTIONS:speakers IS NOT NULL
ORDER BY t.JOB_ID, s.index;

-- Batches submitted over HTTP (POST /v1/batches: every file under a stage prefix) and their progress.
SELECT
  b.BATCH_ID,
  b.STAGE,
  b.PATTERN,
  b.FILES,
  b.CREATED_AT,
  COUNT_IF(j.STATUS = 'succeeded') AS SUCCEEDED,
  COUNT_IF(j.STATUS = 'failed') AS FAILED,
  COUNT_IF(j.STATUS NOT IN ('succeeded', 'failed', 'cancelled')) AS PENDING
FROM TRANSCRIPTION_BATCHES AS b
LEFT JOIN TRANSCRIPTION_JOBS AS j ON j.BATCH_ID = b.BATCH_ID
GROUP BY b.BATCH_ID, b.STAGE, b.PATTERN, b.FILES, b.CREATED_AT
ORDER BY b.CREATED_AT DESC
LIMIT 20;

-- The original notebook's tables, kept as views over the service's tables.
SELECT o.FILE_NAME, o.LANGUAGE, o.TRANSCRIPTION
FROM WHISPER_DEMO_OUTPUT AS o
ORDER BY o.CREATED_AT DESC
LIMIT 20;

SELECT tr.FILE_NAME, tr.SOURCE_LANGUAGE, tr.TARGET_LANGUAGE, tr.METHOD, tr.TRANSCRIPTION, tr.TRANSLATION
FROM WHISPER_DEMO_TRANSLATION AS tr
LIMIT 20;

-- 7. Compare the service's translation with Cortex TRANSLATE run directly in SQL ('' = detect the source
--    language). One TRANSLATE call per row: fine for short transcripts; the service splits long ones.
SELECT
  t.JOB_ID,
  t.LANGUAGE,
  t.TEXT AS ORIGINAL,
  tr.METHOD,
  tr.TEXT AS SERVICE_TRANSLATION,
  SNOWFLAKE.CORTEX.TRANSLATE(t.TEXT, '', 'en') AS CORTEX_TRANSLATION
FROM TRANSCRIPTIONS AS t
LEFT JOIN TRANSLATIONS AS tr
  ON tr.JOB_ID = t.JOB_ID AND tr.TARGET_LANGUAGE = 'en'
WHERE t.LANGUAGE <> 'en'
ORDER BY t.JOB_ID
LIMIT 20;

-- The same with an LLM, as in the original notebook.
SELECT
  t.JOB_ID,
  SNOWFLAKE.CORTEX.COMPLETE(
    'openai-gpt-4.1',
    'Translate the following text into English. Answer with the translation only.\n\n' || t.TEXT
  ) AS COMPLETE_TRANSLATION
FROM TRANSCRIPTIONS AS t
WHERE t.LANGUAGE <> 'en'
LIMIT 20;
