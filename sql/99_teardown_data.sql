-- 99_teardown_data.sql: DESTRUCTIVE. After `make teardown` dropped the services and pools, drops what holds data: the result tables and
-- views, the audio and model stages with their files, the spec stage, the image repository with its images,
-- and the secrets. Only `make teardown DROP_DATA=1` runs it. The roles, the warehouse and the
-- database stay (00_setup.sql made them with the admin role; drop them by hand if wanted).
--   snow sql -f sql/99_teardown_data.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)

DROP VIEW IF EXISTS WHISPER_DEMO_TRANSLATION;
DROP VIEW IF EXISTS WHISPER_DEMO_OUTPUT;
DROP TABLE IF EXISTS TRANSLATIONS;
DROP TABLE IF EXISTS TRANSCRIPTIONS;
DROP TABLE IF EXISTS TRANSCRIPTION_BATCHES;
DROP TABLE IF EXISTS TRANSCRIPTION_JOBS;
-- The row access policies of 10_row_access.sql (nothing is attached to them once the tables are gone).
DROP ROW ACCESS POLICY IF EXISTS WHISPER_OWNER_ROWS;
DROP ROW ACCESS POLICY IF EXISTS WHISPER_JOB_ROWS;
DROP ROW ACCESS POLICY IF EXISTS WHISPER_BATCH_ROWS;

DROP STAGE IF EXISTS AUDIO_FILES_STAGE;
DROP STAGE IF EXISTS MODELS;
DROP STAGE IF EXISTS <% spec_stage %>;
DROP IMAGE REPOSITORY IF EXISTS <% image_repository %>;

DROP SECRET IF EXISTS <% api_token_secret %>;
DROP SECRET IF EXISTS <% ray_auth_token_secret %>;
