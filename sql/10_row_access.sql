-- 10_row_access.sql: analysts read only their own rows of the result tables, as the API scopes them; the deployer
-- role (the services' owner role, so the gateway itself) and every role above it (SYSADMIN, ACCOUNTADMIN) read all.
-- Re-runnable. `make deploy` runs it last, after 08_grants.sql:
--   snow sql -f sql/10_row_access.sql $(python -m deploy.render --sql-vars)
-- with a connection whose user holds the admin role (for the one schema grant below), like 00_setup.sql.
--
-- Row access policies (https://docs.snowflake.com/en/user-guide/security-row-intro): a schema-level object whose
-- body, a boolean SQL expression over the protected row's columns, decides whether the querying session sees the row,
-- in SELECT and in the rows UPDATE, DELETE and MERGE touch. The body may use context functions and subqueries on a
-- mapping table (https://docs.snowflake.com/en/sql-reference/sql/create-row-access-policy); it is evaluated with the
-- policy owner's privileges, so analysts need no access to the mapping table.
-- * OWNER holds the Snowflake user the gateway recorded (Sf-Context-Current-User: CURRENT_USER of the calling
--   session, service/api/callers.py), matched here against CURRENT_USER(). A job without an owner (local use,
--   service-to-service calls) is no analyst's.
-- * TRANSCRIPTIONS and TRANSLATIONS have no owner column: their policy looks the job up in TRANSCRIPTION_JOBS (the
--   mapping table), TRANSCRIPTION_BATCHES through the jobs of the batch. The policy argument is named ROW_JOB_ID /
--   ROW_BATCH_ID, never JOB_ID / BATCH_ID: inside the subquery an unqualified JOB_ID would be the mapping table's own
--   column and the condition always true. TRANSCRIPTION_JOBS is itself protected; referencing a protected mapping
--   table from another policy is supported (https://docs.snowflake.com/en/user-guide/security-row-using), and here
--   its own policy can only keep the same rows (the caller's jobs).
-- * IS_ROLE_IN_SESSION, not CURRENT_ROLE: it follows the role hierarchy (and secondary roles), as Snowflake
--   recommends for policies (https://docs.snowflake.com/en/sql-reference/functions/is_role_in_session,
--   https://docs.snowflake.com/en/user-guide/security-column-advanced). CURRENT_USER and IS_ROLE_IN_SESSION name the
--   querying session also through the views WHISPER_DEMO_OUTPUT / WHISPER_DEMO_TRANSLATION, which therefore show each
--   analyst only their own transcripts (INVOKER_ROLE would name the view's owner instead:
--   https://docs.snowflake.com/en/sql-reference/functions/invoker_role).
-- * The gateway runs as the deployer role (the services' owner role), so its own MERGE / UPDATE / DELETE on these
--   tables see every row.
--
-- Order, so that no analyst ever sees an unscoped row, even during a re-run: SELECT is revoked first, the policies
-- are created (bodies re-applied with ALTER ... SET BODY, so a changed body reaches an existing policy) and attached,
-- and only then is SELECT granted. 08_grants.sql grants no SELECT on these tables or views. Detaching before
-- attaching keeps the script re-runnable: DROP ALL ROW ACCESS POLICIES succeeds when none is attached
-- (https://docs.snowflake.com/en/release-notes/bcr-bundles/2023_07/bcr-1327), ADD fails when one already is.

USE ROLE <% admin_role %>;
GRANT CREATE ROW ACCESS POLICY ON SCHEMA <% database %>.<% schema %> TO ROLE <% deployer_role %>;
USE ROLE <% deployer_role %>;
USE SCHEMA <% database %>.<% schema %>;

REVOKE SELECT ON TABLE TRANSCRIPTION_JOBS FROM ROLE <% analyst_role %>;
REVOKE SELECT ON TABLE TRANSCRIPTIONS FROM ROLE <% analyst_role %>;
REVOKE SELECT ON TABLE TRANSLATIONS FROM ROLE <% analyst_role %>;
REVOKE SELECT ON TABLE TRANSCRIPTION_BATCHES FROM ROLE <% analyst_role %>;
REVOKE SELECT ON VIEW WHISPER_DEMO_OUTPUT FROM ROLE <% analyst_role %>;
REVOKE SELECT ON VIEW WHISPER_DEMO_TRANSLATION FROM ROLE <% analyst_role %>;

-- A job row: its owner's, and the deployer's.
CREATE ROW ACCESS POLICY IF NOT EXISTS WHISPER_OWNER_ROWS AS (ROW_OWNER VARCHAR) RETURNS BOOLEAN ->
  IS_ROLE_IN_SESSION('<% deployer_role %>') OR ROW_OWNER = CURRENT_USER()
  COMMENT = 'spcs-whisper: a job row is its owner''s (CURRENT_USER) and the deployer''s';
ALTER ROW ACCESS POLICY WHISPER_OWNER_ROWS SET BODY ->
  IS_ROLE_IN_SESSION('<% deployer_role %>') OR ROW_OWNER = CURRENT_USER();

-- A transcript or translation row: the owner of its job's, and the deployer's.
CREATE ROW ACCESS POLICY IF NOT EXISTS WHISPER_JOB_ROWS AS (ROW_JOB_ID VARCHAR) RETURNS BOOLEAN ->
  IS_ROLE_IN_SESSION('<% deployer_role %>')
  OR EXISTS (
    SELECT 1 FROM <% database %>.<% schema %>.TRANSCRIPTION_JOBS AS j
    WHERE j.JOB_ID = ROW_JOB_ID AND j.OWNER = CURRENT_USER()
  )
  COMMENT = 'spcs-whisper: a result row is the owner''s of its job (TRANSCRIPTION_JOBS.OWNER) and the deployer''s';
ALTER ROW ACCESS POLICY WHISPER_JOB_ROWS SET BODY ->
  IS_ROLE_IN_SESSION('<% deployer_role %>')
  OR EXISTS (
    SELECT 1 FROM <% database %>.<% schema %>.TRANSCRIPTION_JOBS AS j
    WHERE j.JOB_ID = ROW_JOB_ID AND j.OWNER = CURRENT_USER()
  );

-- A batch row: of whoever owns a job of the batch (one caller submits a batch), and the deployer's.
CREATE ROW ACCESS POLICY IF NOT EXISTS WHISPER_BATCH_ROWS AS (ROW_BATCH_ID VARCHAR) RETURNS BOOLEAN ->
  IS_ROLE_IN_SESSION('<% deployer_role %>')
  OR EXISTS (
    SELECT 1 FROM <% database %>.<% schema %>.TRANSCRIPTION_JOBS AS j
    WHERE j.BATCH_ID = ROW_BATCH_ID AND j.OWNER = CURRENT_USER()
  )
  COMMENT = 'spcs-whisper: a batch row is the owner''s of its jobs and the deployer''s';
ALTER ROW ACCESS POLICY WHISPER_BATCH_ROWS SET BODY ->
  IS_ROLE_IN_SESSION('<% deployer_role %>')
  OR EXISTS (
    SELECT 1 FROM <% database %>.<% schema %>.TRANSCRIPTION_JOBS AS j
    WHERE j.BATCH_ID = ROW_BATCH_ID AND j.OWNER = CURRENT_USER()
  );

ALTER TABLE TRANSCRIPTION_JOBS DROP ALL ROW ACCESS POLICIES;
ALTER TABLE TRANSCRIPTION_JOBS ADD ROW ACCESS POLICY WHISPER_OWNER_ROWS ON (OWNER);
ALTER TABLE TRANSCRIPTIONS DROP ALL ROW ACCESS POLICIES;
ALTER TABLE TRANSCRIPTIONS ADD ROW ACCESS POLICY WHISPER_JOB_ROWS ON (JOB_ID);
ALTER TABLE TRANSLATIONS DROP ALL ROW ACCESS POLICIES;
ALTER TABLE TRANSLATIONS ADD ROW ACCESS POLICY WHISPER_JOB_ROWS ON (JOB_ID);
ALTER TABLE TRANSCRIPTION_BATCHES DROP ALL ROW ACCESS POLICIES;
ALTER TABLE TRANSCRIPTION_BATCHES ADD ROW ACCESS POLICY WHISPER_BATCH_ROWS ON (BATCH_ID);

-- Now, and only now, the analysts' SELECT (the views read the protected tables, so they are scoped too).
GRANT SELECT ON TABLE TRANSCRIPTION_JOBS TO ROLE <% analyst_role %>;
GRANT SELECT ON TABLE TRANSCRIPTIONS TO ROLE <% analyst_role %>;
GRANT SELECT ON TABLE TRANSLATIONS TO ROLE <% analyst_role %>;
GRANT SELECT ON TABLE TRANSCRIPTION_BATCHES TO ROLE <% analyst_role %>;
GRANT SELECT ON VIEW WHISPER_DEMO_OUTPUT TO ROLE <% analyst_role %>;
GRANT SELECT ON VIEW WHISPER_DEMO_TRANSLATION TO ROLE <% analyst_role %>;
