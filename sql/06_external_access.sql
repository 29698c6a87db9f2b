-- 06_external_access.sql: OPTIONAL. Egress to the Hugging Face hub, for Ray workers that download a model
-- by name (SPCS_WHISPER_MODEL = openai/whisper-large-v3) instead of reading it from the MODELS stage.
-- `make deploy` runs it only when external_access.enabled is true in deploy/config.yaml, and then binds the
-- integration to the worker service with 07_worker_external_access.sql. Without it the services have no
-- internet access at all, which is the default: upload the checkpoint to @MODELS once instead.
-- Re-runnable (IF NOT EXISTS). To change the hosts of an existing rule: ALTER NETWORK RULE ... SET VALUE_LIST.
--   snow sql -f sql/06_external_access.sql $(python -m deploy.render --sql-vars)
-- Creating an external access integration needs the admin role (roles.admin); the rule belongs to the deployer.

USE ROLE <% deployer_role %>;

-- huggingface.co serves the API and small files; large files redirect to the LFS CDN and, for repositories
-- stored with Xet, to the Xet bridge.
CREATE NETWORK RULE IF NOT EXISTS <% database %>.<% schema %>.<% hf_network_rule %>
  MODE = EGRESS
  TYPE = HOST_PORT
  VALUE_LIST = (
    'huggingface.co',
    'cdn-lfs.huggingface.co',
    'cdn-lfs-us-1.huggingface.co',
    'cdn-lfs-eu-1.huggingface.co',
    'cas-bridge.xethub.hf.co',
    'cas-server.xethub.hf.co',
    'transfer.xethub.hf.co'
  )
  COMMENT = 'spcs-whisper: Hugging Face hub downloads';

USE ROLE <% admin_role %>;

CREATE EXTERNAL ACCESS INTEGRATION IF NOT EXISTS <% hf_integration %>
  ALLOWED_NETWORK_RULES = (<% database %>.<% schema %>.<% hf_network_rule %>)
  ENABLED = TRUE
  COMMENT = 'spcs-whisper: Hugging Face hub downloads for the Ray workers';
GRANT USAGE ON INTEGRATION <% hf_integration %> TO ROLE <% deployer_role %>;
