-- 08_grants.sql: what the analyst role may use, granted by the deployer role that owns it all. Re-runnable.
-- Run after 03_service_functions.sql (the functions must exist):
--   snow sql -f sql/08_grants.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)
-- USAGE on the database, schema and warehouse comes from 00_setup.sql.

-- The SQL functions (each signature separately), and the gateway's service role, which grants USAGE on its
-- endpoint `api`: service functions and the public endpoint both need it.
GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR, VARCHAR) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIBE(VARCHAR) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIBE_SUBMIT(VARCHAR, VARCHAR, VARCHAR) TO ROLE <% analyst_role %>;
GRANT USAGE ON FUNCTION TRANSCRIPTION_STATUS(VARCHAR) TO ROLE <% analyst_role %>;
GRANT SERVICE ROLE <% gateway_service %>!<% gateway_service_role %> TO ROLE <% analyst_role %>;

-- The results (01_tables.sql).
GRANT SELECT ON TABLE TRANSCRIPTION_JOBS TO ROLE <% analyst_role %>;
GRANT SELECT ON TABLE TRANSCRIPTIONS TO ROLE <% analyst_role %>;
GRANT SELECT ON TABLE TRANSLATIONS TO ROLE <% analyst_role %>;
GRANT SELECT ON TABLE TRANSCRIPTION_BATCHES TO ROLE <% analyst_role %>;
GRANT SELECT ON VIEW WHISPER_DEMO_OUTPUT TO ROLE <% analyst_role %>;
GRANT SELECT ON VIEW WHISPER_DEMO_TRANSLATION TO ROLE <% analyst_role %>;

-- The audio stage (02_stages.sql): list it (DIRECTORY), upload files to transcribe, refresh its directory.
GRANT READ, WRITE ON STAGE AUDIO_FILES_STAGE TO ROLE <% analyst_role %>;
