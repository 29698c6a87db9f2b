-- 04_image_repository.sql: the image repository the services pull from, and the stage that holds their
-- specifications. Re-runnable (IF NOT EXISTS). Run as the deployer role in the service's database and schema:
--   snow sql -f sql/04_image_repository.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)
-- Then `make push` tags the images as <repository URL>/<name>:<tag> and pushes them
-- (`snow spcs image-repository url <% image_repository %>` prints the URL).

CREATE IMAGE REPOSITORY IF NOT EXISTS <% image_repository %>;

-- spec/*.yaml, uploaded by `make deploy` (snow stage copy spec/<file> @<% spec_stage %> --overwrite) and read
-- by CREATE SERVICE ... FROM @<% spec_stage %> SPECIFICATION_FILE = '<file>'.
CREATE STAGE IF NOT EXISTS <% spec_stage %>
  DIRECTORY = (ENABLE = TRUE)
  ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')
  COMMENT = 'spcs-whisper: service specifications (spec/*.yaml, generated from deploy/config.yaml)';
