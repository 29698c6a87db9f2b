-- 09_upgrade_services.sql: apply the specifications on the stage (and the images they name) to the running
-- services. Not part of the first deployment: `make upgrade` uploads spec/*.yaml and runs this after a changed
-- deploy/config.yaml (`make render`) or newly pushed images (`make push`). Snowflake restarts the service's
-- containers with the new specification. The head goes first; a new head is a new Ray cluster, which the
-- workers join again by themselves (their container loops on `ray start --block`).
--   snow sql -f sql/09_upgrade_services.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)
-- Syntax: https://docs.snowflake.com/en/sql-reference/sql/alter-service

ALTER SERVICE <% head_service %> FROM @<% spec_stage %> SPECIFICATION_FILE = '<% head_spec %>';
ALTER SERVICE <% worker_service %> FROM @<% spec_stage %> SPECIFICATION_FILE = '<% worker_spec %>';
ALTER SERVICE <% gateway_service %> FROM @<% spec_stage %> SPECIFICATION_FILE = '<% gateway_spec %>';
