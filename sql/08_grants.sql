-- 08_grants.sql: what the analyst role may use, granted by the deployer role that owns it all. Re-runnable.
-- Run after 03_service_functions.sql (the functions must exist):
--   snow sql -f sql/08_grants.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)
-- USAGE on the database, schema and warehouse comes from 00_setup.sql.

-- The SQL functions (each signature separately), and the gateway's service role, which grants USAGE on its
-- two endpoints: `functions` (not public), which the SQL functions call, and `api` (public), the HTTP API and
-- web page through SPCS ingress (which also wants the API token).
--   https://docs.snowflake.com/en/release-notes/bcr-bundles/2024_04/bcr-1611
--   https://docs.snowflake.com/en/developer-guide/snowpark-container-services/tutorials/advanced/tutorial-5-configure-test-service-role
GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR, VARCHAR) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR, OBJECT) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIBE_SUBMIT(VARCHAR, VARCHAR, VARCHAR) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIBE_SUBMIT(VARCHAR, OBJECT) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIPTION_STATUS(VARCHAR) TO ROLE <% analyst_role %>;
GRANT SERVICE ROLE <% gateway_service %>!<% gateway_service_role %> TO ROLE <% analyst_role %>;

-- The results (01_tables.sql): SELECT on the tables and views is granted by 10_row_access.sql, after it has attached
-- the row access policies that limit each analyst to their own rows. A SELECT granted here, before them, would show
-- every user's transcripts.

-- The audio stage (02_stages.sql): list it (DIRECTORY), upload files to transcribe, refresh its directory.
GRANT READ, WRITE ON STAGE AUDIO_FILES_STAGE TO ROLE <% analyst_role %>;
