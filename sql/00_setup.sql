-- 00_setup.sql: roles, warehouse, database and schema, and what the deployer and analyst roles may do.
-- Re-runnable (IF NOT EXISTS; grants are idempotent). Names are Snowflake CLI template variables from
-- deploy/config.yaml; `make deploy` runs it as
--   snow sql -f sql/00_setup.sql $(python -m deploy.render --sql-vars)
-- with a connection whose user holds the admin role (roles.admin, ACCOUNTADMIN by default): creating roles
-- and granting account privileges (CREATE COMPUTE POOL, BIND SERVICE ENDPOINT) needs it.
--
-- The deployer role owns everything the later scripts create (stages, tables, image repository, compute
-- pools, secrets, services, functions) and so is each service's owner role: the services' Snowpark sessions
-- run with its privileges. SPCS refuses ACCOUNTADMIN, SECURITYADMIN and ORGADMIN as a service's owner role.
-- Both roles are granted to SYSADMIN, so administrators (and `snow sql --role ...`) can use them.

USE ROLE <% admin_role %>;

CREATE ROLE IF NOT EXISTS <% deployer_role %> COMMENT = 'spcs-whisper: owns the deployment (stages, tables, pools, services)';
CREATE ROLE IF NOT EXISTS <% analyst_role %> COMMENT = 'spcs-whisper: calls the SQL functions and reads the results';
GRANT ROLE <% deployer_role %> TO ROLE SYSADMIN;
GRANT ROLE <% analyst_role %> TO ROLE SYSADMIN;

CREATE WAREHOUSE IF NOT EXISTS <% warehouse %>
  WAREHOUSE_SIZE = '<% warehouse_size %>'
  AUTO_SUSPEND = 60
  AUTO_RESUME = TRUE
  INITIALLY_SUSPENDED = TRUE
  COMMENT = 'spcs-whisper: queries of the services and the analysts';
CREATE DATABASE IF NOT EXISTS <% database %> COMMENT = 'spcs-whisper';
CREATE SCHEMA IF NOT EXISTS <% database %>.<% schema %>;

-- The deployer: objects in the schema, compute pools, public endpoints.
GRANT USAGE ON WAREHOUSE <% warehouse %> TO ROLE <% deployer_role %>;
GRANT USAGE ON DATABASE <% database %> TO ROLE <% deployer_role %>;
GRANT USAGE ON SCHEMA <% database %>.<% schema %> TO ROLE <% deployer_role %>;
GRANT CREATE TABLE, CREATE VIEW, CREATE STAGE, CREATE FUNCTION, CREATE SECRET, CREATE NETWORK RULE
  ON SCHEMA <% database %>.<% schema %> TO ROLE <% deployer_role %>;
GRANT CREATE IMAGE REPOSITORY, CREATE SERVICE ON SCHEMA <% database %>.<% schema %> TO ROLE <% deployer_role %>;
GRANT CREATE COMPUTE POOL ON ACCOUNT TO ROLE <% deployer_role %>;
-- A public endpoint (the gateway's `api`) needs BIND SERVICE ENDPOINT on the account.
GRANT BIND SERVICE ENDPOINT ON ACCOUNT TO ROLE <% deployer_role %>;
-- The gateway translates with SNOWFLAKE.CORTEX.TRANSLATE / COMPLETE under the service's owner role.
GRANT DATABASE ROLE SNOWFLAKE.CORTEX_USER TO ROLE <% deployer_role %>;

-- The analyst: the database, schema and warehouse; the functions, tables, stage and the gateway's service
-- role are granted by their owner in 08_grants.sql. CORTEX_USER for comparing translations
-- (90_example_queries.sql).
GRANT USAGE ON WAREHOUSE <% warehouse %> TO ROLE <% analyst_role %>;
GRANT USAGE ON DATABASE <% database %> TO ROLE <% analyst_role %>;
GRANT USAGE ON SCHEMA <% database %>.<% schema %> TO ROLE <% analyst_role %>;
GRANT DATABASE ROLE SNOWFLAKE.CORTEX_USER TO ROLE <% analyst_role %>;
