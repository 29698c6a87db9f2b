-- 07_secrets.sql: the secrets the services read, before 07_services.sql creates the services. Re-runnable:
-- a secret is created once (IF NOT EXISTS), so its value is used only the first time.
-- The values are template variables from the caller, not from deploy/config.yaml, and never `snow sql -D` options
-- (a command-line argument shows in the process list and the shell history): `python -m deploy.render --secrets-sql`
-- fills them in, $SPCS_WHISPER_API_TOKEN from the environment and a random Ray token, escaped as string literals,
-- and `make deploy` pipes the result into `snow sql --stdin`, discarding its output (snow prints each statement):
--   python -m deploy.render --secrets-sql | snow sql --stdin --enable-templating NONE \
--     --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC >/dev/null
-- The specs hand the secrets to the containers as environment variables (secrets: snowflakeSecret / envVarName),
-- never as plain values. To rotate one, run ALTER SECRET WHISPER_API_TOKEN SET SECRET_STRING = '...' the same way
-- (through stdin), then `make upgrade` restarts the services with it.

CREATE SECRET IF NOT EXISTS <% api_token_secret %>
  TYPE = GENERIC_STRING
  SECRET_STRING = '<% api_token %>'
  COMMENT = 'spcs-whisper: bearer token of the gateway API (SPCS_WHISPER_API_TOKEN)';
CREATE SECRET IF NOT EXISTS <% ray_auth_token_secret %>
  TYPE = GENERIC_STRING
  SECRET_STRING = '<% ray_auth_token %>'
  COMMENT = 'spcs-whisper: Ray cluster token (RAY_AUTH_TOKEN of the head and the workers)';
