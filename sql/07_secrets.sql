-- 07_secrets.sql: the secrets the services read, before 07_services.sql creates the services. Re-runnable:
-- a secret is created once (IF NOT EXISTS), so its value is used only the first time.
-- The values are template variables from the caller, not from deploy/config.yaml: `make deploy` passes
-- $SPCS_WHISPER_API_TOKEN and a random Ray token, and discards the output of this script, because `snow sql -f`
-- prints each statement it runs:
--   snow sql -f sql/07_secrets.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars) -D "api_token=$SPCS_WHISPER_API_TOKEN" -D "ray_auth_token=..." >/dev/null
-- The values must not contain a single quote. The specs hand the secrets to the containers as environment
-- variables (secrets: snowflakeSecret / envVarName), never as plain values. To rotate one:
--   ALTER SECRET WHISPER_API_TOKEN SET SECRET_STRING = '...';   then `make upgrade` restarts the services with it.

CREATE SECRET IF NOT EXISTS <% api_token_secret %>
  TYPE = GENERIC_STRING
  SECRET_STRING = '<% api_token %>'
  COMMENT = 'spcs-whisper: bearer token of the gateway API (SPCS_WHISPER_API_TOKEN)';
CREATE SECRET IF NOT EXISTS <% ray_auth_token_secret %>
  TYPE = GENERIC_STRING
  SECRET_STRING = '<% ray_auth_token %>'
  COMMENT = 'spcs-whisper: Ray cluster token (RAY_AUTH_TOKEN of the head and the workers)';
