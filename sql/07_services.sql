-- 07_services.sql: the three services: the Ray head (CPU pool), the Ray GPU workers (GPU pool,
-- MIN/MAX_INSTANCES) and the gateway (CPU pool, public endpoint `api`, service-function endpoint `functions`). Re-runnable: services are
-- created once (IF NOT EXISTS), and the ALTER ... SET statements apply changed instance counts (not the
-- gateway's: see below) and the warehouse from deploy/config.yaml without restarting anything. A changed specification or a new image
-- is applied by 09_upgrade_services.sql (`make upgrade`), not here.
-- Run as the deployer role, after 07_secrets.sql and with the specs on the stage (`make deploy` does all):
--   snow stage copy spec/<file>.yaml @WHISPER_SPECS --overwrite        (for each spec file)
--   snow sql -f sql/07_services.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)
-- Syntax: https://docs.snowflake.com/en/sql-reference/sql/create-service

-- The Ray head first: the workers join it at <head DNS name>:6379, the gateway calls its Serve port.
CREATE SERVICE IF NOT EXISTS <% head_service %>
  IN COMPUTE POOL <% head_compute_pool %>
  FROM @<% spec_stage %> SPECIFICATION_FILE = '<% head_spec %>'
  MIN_INSTANCES = <% head_min_instances %>
  MAX_INSTANCES = <% head_max_instances %>
  QUERY_WAREHOUSE = <% warehouse %>
  COMMENT = 'spcs-whisper: Ray head (GCS, Ray Serve HTTP, the decoder)';
ALTER SERVICE <% head_service %> SET
  MIN_INSTANCES = <% head_min_instances %>
  MAX_INSTANCES = <% head_max_instances %>
  QUERY_WAREHOUSE = <% warehouse %>;

CREATE SERVICE IF NOT EXISTS <% worker_service %>
  IN COMPUTE POOL <% worker_compute_pool %>
  FROM @<% spec_stage %> SPECIFICATION_FILE = '<% worker_spec %>'
  MIN_INSTANCES = <% worker_min_instances %>
  MAX_INSTANCES = <% worker_max_instances %>
  QUERY_WAREHOUSE = <% warehouse %>
  COMMENT = 'spcs-whisper: Ray GPU workers (Whisper replicas)';
ALTER SERVICE <% worker_service %> SET
  MIN_INSTANCES = <% worker_min_instances %>
  MAX_INSTANCES = <% worker_max_instances %>
  QUERY_WAREHOUSE = <% warehouse %>;

-- The gateway has a block volume (its job queue): Snowflake refuses ALTER SERVICE ... SET MIN_INSTANCES /
-- MAX_INSTANCES for a service with block volumes, so its instance count (exactly one) is set in CREATE only.
--   https://docs.snowflake.com/en/developer-guide/snowpark-container-services/block-storage-volume
CREATE SERVICE IF NOT EXISTS <% gateway_service %>
  IN COMPUTE POOL <% gateway_compute_pool %>
  FROM @<% spec_stage %> SPECIFICATION_FILE = '<% gateway_spec %>'
  MIN_INSTANCES = <% gateway_min_instances %>
  MAX_INSTANCES = <% gateway_max_instances %>
  QUERY_WAREHOUSE = <% warehouse %>
  COMMENT = 'spcs-whisper: HTTP gateway (jobs, OpenAI-compatible API, service functions)';
ALTER SERVICE <% gateway_service %> SET
  QUERY_WAREHOUSE = <% warehouse %>;
