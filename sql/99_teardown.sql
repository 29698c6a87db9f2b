-- 99_teardown.sql: stop paying for compute. Drops the SQL functions, the three services and the two compute
-- pools. Keeps everything that holds data or is cheap to keep: tables and views, the audio, model and spec
-- stages, the image repository, the secrets, the roles, warehouse and database. `make teardown DROP_DATA=1`
-- also runs 99_teardown_data.sql, which drops those (not the roles, warehouse and database).
-- Re-runnable (IF EXISTS). Run as the deployer role:
--   snow sql -f sql/99_teardown.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)
-- The optional external access (06_external_access.sql) stays; drop it by hand, the integration with the admin role:
--   DROP INTEGRATION IF EXISTS HF_HUB_ACCESS;  DROP NETWORK RULE IF EXISTS HF_HUB_NETWORK_RULE;

DROP FUNCTION IF EXISTS TRANSCRIBE(VARCHAR, VARCHAR);
DROP FUNCTION IF EXISTS TRANSCRIBE(VARCHAR);
DROP FUNCTION IF EXISTS TRANSCRIBE_SUBMIT(VARCHAR, VARCHAR, VARCHAR);
DROP FUNCTION IF EXISTS TRANSCRIPTION_STATUS(VARCHAR);

DROP SERVICE IF EXISTS <% gateway_service %>;
DROP SERVICE IF EXISTS <% worker_service %>;
DROP SERVICE IF EXISTS <% head_service %>;

-- A pool with services cannot be dropped; STOP ALL ends whatever still runs on these two pools, which belong
-- to this deployment only (deploy/config.yaml names them).
ALTER COMPUTE POOL IF EXISTS <% gpu_pool %> STOP ALL;
DROP COMPUTE POOL IF EXISTS <% gpu_pool %>;
ALTER COMPUTE POOL IF EXISTS <% cpu_pool %> STOP ALL;
DROP COMPUTE POOL IF EXISTS <% cpu_pool %>;
