-- 07_worker_external_access.sql: OPTIONAL, with 06_external_access.sql. Lets the Ray workers reach the
-- Hugging Face hub through the external access integration. `make deploy` runs it after 07_services.sql
-- only when external_access.enabled is true in deploy/config.yaml. Re-runnable.
-- (The specs then leave HF_HUB_OFFLINE unset; run `make render` and `make upgrade` after switching.)
--   snow sql -f sql/07_worker_external_access.sql --role WHISPER_DEPLOYER --database WHISPER_DB --schema PUBLIC \
--     $(python -m deploy.render --sql-vars)

ALTER SERVICE <% worker_service %> SET EXTERNAL_ACCESS_INTEGRATIONS = (<% hf_integration %>);
