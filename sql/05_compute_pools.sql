-- 05_compute_pools.sql: the CPU pool (gateway, Ray head) and the GPU pool (Ray workers). Re-runnable: the
-- pools are created once, and the ALTER statements apply changed node counts from deploy/config.yaml. The
-- instance family cannot be changed on an existing pool: drop it (99_teardown.sql) to change it.
-- Run as the deployer role (00_setup.sql grants it CREATE COMPUTE POOL):
--   snow sql -f sql/05_compute_pools.sql --role WHISPER_DEPLOYER $(python -m deploy.render --sql-vars)
-- Syntax: https://docs.snowflake.com/en/sql-reference/sql/create-compute-pool

CREATE COMPUTE POOL IF NOT EXISTS <% cpu_pool %>
  MIN_NODES = <% cpu_pool_min_nodes %>
  MAX_NODES = <% cpu_pool_max_nodes %>
  INSTANCE_FAMILY = <% cpu_pool_instance_family %>
  AUTO_RESUME = TRUE
  AUTO_SUSPEND_SECS = <% cpu_pool_auto_suspend_secs %>
  COMMENT = 'spcs-whisper: gateway and Ray head';
ALTER COMPUTE POOL <% cpu_pool %> SET
  MIN_NODES = <% cpu_pool_min_nodes %>
  MAX_NODES = <% cpu_pool_max_nodes %>
  AUTO_SUSPEND_SECS = <% cpu_pool_auto_suspend_secs %>;

CREATE COMPUTE POOL IF NOT EXISTS <% gpu_pool %>
  MIN_NODES = <% gpu_pool_min_nodes %>
  MAX_NODES = <% gpu_pool_max_nodes %>
  INSTANCE_FAMILY = <% gpu_pool_instance_family %>
  AUTO_RESUME = TRUE
  AUTO_SUSPEND_SECS = <% gpu_pool_auto_suspend_secs %>
  COMMENT = 'spcs-whisper: Ray GPU workers (one Whisper replica per GPU)';
ALTER COMPUTE POOL <% gpu_pool %> SET
  MIN_NODES = <% gpu_pool_min_nodes %>
  MAX_NODES = <% gpu_pool_max_nodes %>
  AUTO_SUSPEND_SECS = <% gpu_pool_auto_suspend_secs %>;
