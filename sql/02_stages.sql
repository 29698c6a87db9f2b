-- 02_stages.sql: the stages the service reads audio and models from. Re-runnable (IF NOT EXISTS).
--
-- Run in the database and schema that hold the service's tables (01_tables.sql), e.g.
--   snow sql -f sql/02_stages.sql --database WHISPER_DB --schema PUBLIC
--
-- ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE'): server-side encryption only. The default for internal stages,
-- SNOWFLAKE_FULL, also encrypts client-side, and files read back through file URLs then arrive
-- unreadable (Snowflake's directory-table usage notes point to SNOWFLAKE_SSE for this); the Cortex file
-- functions need SNOWFLAKE_SSE too, and it is the encryption we use for the SPCS stage volume mounts.
-- The encryption type of a stage cannot be changed later: a stage created without SNOWFLAKE_SSE has to
-- be recreated and its files uploaded again.
--
-- DIRECTORY = (ENABLE = TRUE): a directory table, so SQL can list the files with
--   SELECT RELATIVE_PATH FROM DIRECTORY(@AUDIO_FILES_STAGE)
-- Internal stages do not refresh their directory table by themselves: after PUT, run
--   ALTER STAGE AUDIO_FILES_STAGE REFRESH;

-- Audio and video to transcribe (MP4, MP3, WAV, ...). Service functions get '@AUDIO_FILES_STAGE/<path>';
-- the gateway reads the file through its stage volume mount (settings.stage_mounts) or Snowpark.
CREATE STAGE IF NOT EXISTS AUDIO_FILES_STAGE
  DIRECTORY = (ENABLE = TRUE)
  ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')
  COMMENT = 'spcs-whisper: audio and video files to transcribe';

-- Whisper checkpoints (e.g. openai/whisper-large-v3 or a Hindi fine-tune), mounted read-only into the
-- Ray worker containers and loaded by path.
CREATE STAGE IF NOT EXISTS MODELS
  DIRECTORY = (ENABLE = TRUE)
  ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')
  COMMENT = 'spcs-whisper: Whisper model checkpoints for the Ray workers';
