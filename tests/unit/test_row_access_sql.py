"""Issue 14, SQL: analysts may read only their own rows of the result tables (sql/10_row_access.sql), as the API scopes
them; the grants never give them unscoped access. Checked by parsing the scripts with sqlglot's Snowflake dialect
(tests/unit/test_sql.py `parse`, which also parses CREATE ROW ACCESS POLICY bodies); the policy logic itself is
evaluated over emulated tables in tests/snowflake/test_row_access_policy.py.
https://docs.snowflake.com/en/sql-reference/sql/create-row-access-policy
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from deploy.config import load
from tests.unit.test_sql import SQL_DIR, command_text, created, parse

SCRIPT = SQL_DIR / "10_row_access.sql"
CONFIG = load()
ROLES = CONFIG["roles"]
DB, SCHEMA = CONFIG["snowflake"]["database"], CONFIG["snowflake"]["schema"]
MAPPING = "TRANSCRIPTION_JOBS"  # the table that knows each job's owner
# Which policy protects which table, on which columns (the tables of 01_tables.sql, all of them).
EXPECTED = {
    "TRANSCRIPTION_JOBS": ("WHISPER_OWNER_ROWS", ["OWNER"]),
    "TRANSCRIPTIONS": ("WHISPER_JOB_ROWS", ["JOB_ID"]),
    "TRANSLATIONS": ("WHISPER_JOB_ROWS", ["JOB_ID"]),
    "TRANSCRIPTION_BATCHES": ("WHISPER_BATCH_ROWS", ["BATCH_ID"]),
}
ATTACH = re.compile(r"ALTER TABLE (\w+) ADD ROW ACCESS POLICY (\w+) ON \((.+)\)")
SET_BODY = re.compile(r"ALTER ROW ACCESS POLICY (\w+) SET BODY -> (.+)")


def policies(path: Path = SCRIPT) -> dict[str, exp.Create]:
    return created(path, {"ROW ACCESS POLICY"})


def attached(path: Path = SCRIPT) -> dict[str, tuple[str, list[str]]]:
    """table -> (policy, columns), from the ALTER TABLE ... ADD ROW ACCESS POLICY statements."""
    found = {}
    for stmt in parse(path):
        if isinstance(stmt, exp.Command) and (m := ATTACH.fullmatch(command_text(stmt))):
            assert m[1] not in found, f"{m[1]}: two policies (Snowflake allows one per table)"
            found[m[1]] = (m[2], [c.strip() for c in m[3].split(",")])
    return found


def table_columns() -> dict[str, dict[str, str]]:
    """table -> {column: type} as 01_tables.sql declares them."""
    return {
        name: {c.name.upper(): c.args["kind"].sql("snowflake") for c in create.this.expressions}
        for name, create in created(SQL_DIR / "01_tables.sql", {"TABLE"}).items()
    }


def signature(create: exp.Create) -> list[tuple[str, str]]:
    return [(c.name.upper(), c.args["kind"].sql("snowflake")) for c in create.this.expressions]


def owner_condition(body: exp.Expression) -> exp.Expression:
    """The body is `IS_ROLE_IN_SESSION('<deployer>') OR <the caller's own rows>`: the second part."""
    assert isinstance(body, exp.Or), body.sql("snowflake")
    admin, own = body.this, body.expression
    assert isinstance(admin, exp.Anonymous) and admin.name.upper() == "IS_ROLE_IN_SESSION", admin.sql("snowflake")
    (role,) = admin.expressions
    assert role.is_string and role.this == ROLES["deployer"], "the deployer role (the gateway's) sees every row"
    return own


def capture_free(create: exp.Create, mapping_columns: set[str]) -> list[str]:
    """The problems of a policy whose body looks rows up in the mapping table: the subquery must compare the
    mapping table's key with the policy's ARGUMENT and its OWNER with CURRENT_USER(). An argument named like a
    mapping-table column would be captured by the subquery (an unqualified name resolves to the innermost scope)
    and the condition would hold for every row."""
    (arg,) = [name for name, _ in signature(create)]
    problems = []
    if arg in mapping_columns:
        problems.append(f"argument {arg} is also a column of {MAPPING}: the subquery would compare it with itself")
    exists = create.expression.find(exp.Exists)
    if exists is None:
        return problems
    select = exists.this
    tables = list(select.find_all(exp.Table))
    if [t.sql("snowflake") for t in tables] != [f"{DB}.{SCHEMA}.{MAPPING} AS j"]:
        problems.append(f"the subquery must read {DB}.{SCHEMA}.{MAPPING} (qualified), not {tables}")
    alias = tables[0].alias_or_name if tables else ""
    pairs = [(eq.this, eq.expression) for eq in select.args["where"].this.find_all(exp.EQ)]
    correlated = [p for p in pairs if any(isinstance(s, exp.Column) and not s.table and s.name == arg for s in p)]
    if len(correlated) != 1 or not any(isinstance(s, exp.Column) and s.table == alias for s in correlated[0]):
        problems.append(f"the subquery must compare one {alias}.<key> with the argument {arg}")
    owner = [p for p in pairs if any(isinstance(s, exp.CurrentUser) for s in p)]
    if len(owner) != 1 or not any(isinstance(s, exp.Column) and s.sql() == f"{alias}.OWNER" for s in owner[0]):
        problems.append(f"the subquery must compare {alias}.OWNER with CURRENT_USER()")
    return problems


def test_every_result_table_has_its_policy_on_the_right_columns() -> None:
    columns = table_columns()
    assert set(EXPECTED) == set(columns), "a table of 01_tables.sql without a row access policy here"
    found = attached()
    assert found == EXPECTED
    made = policies()
    for table, (policy, cols) in found.items():
        assert policy in made, f"{policy} is attached to {table} but never created"
        args = signature(made[policy])
        assert len(args) == len(cols), f"{policy} takes {len(args)} arguments, {table} passes {cols}"
        for (arg, arg_type), column in zip(args, cols):
            assert column in columns[table], f"{table}.{column} does not exist"
            assert arg_type == columns[table][column] == "VARCHAR", (table, column, arg)


def test_each_policy_shows_the_callers_own_rows_and_everything_to_the_deployer() -> None:
    made = policies()
    mapping = set(table_columns()[MAPPING])
    own = owner_condition(made["WHISPER_OWNER_ROWS"].expression)
    assert own.sql("snowflake") == "ROW_OWNER = CURRENT_USER()"
    for name in ("WHISPER_JOB_ROWS", "WHISPER_BATCH_ROWS"):
        assert isinstance(owner_condition(made[name].expression), exp.Exists), name
        assert capture_free(made[name], mapping) == [], name
    keys = {
        name: made[name].expression.find(exp.Exists).find(exp.EQ).this.name
        for name in made
        if name != "WHISPER_OWNER_ROWS"
    }
    assert keys == {"WHISPER_JOB_ROWS": "JOB_ID", "WHISPER_BATCH_ROWS": "BATCH_ID"}
    for create in made.values():
        body = create.expression
        # The role hierarchy counts (SYSADMIN inherits the deployer): IS_ROLE_IN_SESSION, never CURRENT_ROLE().
        assert body.find(exp.CurrentRole) is None and "CURRENT_ROLE" not in body.sql("snowflake").upper()
        assert create.args.get("exists") and not create.args.get("replace"), "IF NOT EXISTS (attached: no REPLACE)"


def test_the_capture_check_catches_an_argument_named_like_the_mapping_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text(
        "CREATE ROW ACCESS POLICY IF NOT EXISTS P AS (JOB_ID VARCHAR) RETURNS BOOLEAN ->\n"
        f"  IS_ROLE_IN_SESSION('{ROLES['deployer']}') OR EXISTS (SELECT 1 FROM {DB}.{SCHEMA}.{MAPPING} AS j\n"
        "  WHERE j.JOB_ID = JOB_ID AND j.OWNER = CURRENT_USER());\n"
    )
    (create,) = policies(bad).values()
    problems = capture_free(create, set(table_columns()[MAPPING]))
    assert any("compare it with itself" in p for p in problems), problems


def test_set_body_keeps_each_policy_as_created() -> None:
    """Re-runs apply the body with ALTER ... SET BODY (CREATE ... IF NOT EXISTS keeps an old one): the same body."""
    made = policies()
    bodies = {}
    for stmt in parse(SCRIPT):
        if isinstance(stmt, exp.Command) and (m := SET_BODY.fullmatch(command_text(stmt))):
            bodies[m[1]] = sqlglot.parse_one(m[2], read="snowflake")
    assert set(bodies) == set(made)
    for name, body in bodies.items():
        assert body == made[name].expression, name


def _statements() -> list[tuple[str, str]]:
    """(kind, text) of every statement of the script, in order."""
    out = []
    for stmt in parse(SCRIPT):
        text = (
            command_text(stmt)
            if isinstance(stmt, exp.Command)
            else " ".join(stmt.sql("snowflake", comments=False).split())
        )
        kind = type(stmt).__name__
        if isinstance(stmt, exp.Create):
            kind = f"Create {stmt.kind}"
        out.append((kind, text))
    return out


def test_analysts_get_select_only_once_every_policy_is_attached() -> None:
    objects = set(created(SQL_DIR / "01_tables.sql", {"TABLE", "VIEW"}))
    analyst = ROLES["analyst"]
    steps = _statements()
    position = {text: i for i, (_, text) in enumerate(steps)}
    revokes = [i for i, (k, t) in enumerate(steps) if k == "Revoke" and t.endswith(f"FROM ROLE {analyst}")]
    grants = [i for i, (k, t) in enumerate(steps) if k == "Grant" and t.startswith("GRANT SELECT")]
    attaches = [i for i, (_, t) in enumerate(steps) if ATTACH.fullmatch(t)]
    detaches = [i for i, (_, t) in enumerate(steps) if t.endswith("DROP ALL ROW ACCESS POLICIES")]
    assert len(revokes) == len(grants) == len(objects) and len(attaches) == len(detaches) == len(EXPECTED)
    assert max(revokes) < min(detaches) and max(attaches) < min(grants), "revoke, (re)attach, then grant"
    revoked = {re.search(r"ON (?:TABLE|VIEW) (\w+)", steps[i][1])[1] for i in revokes}  # type: ignore[index]
    granted = {re.search(r"ON (?:TABLE|VIEW) (\w+) TO ROLE (\w+)", steps[i][1]).groups() for i in grants}  # type: ignore[union-attr]
    assert revoked == objects and granted == {(o, analyst) for o in objects}
    for table in EXPECTED:  # each detach comes right before its attach: re-runnable, never left bare
        detach = position[f"ALTER TABLE {table} DROP ALL ROW ACCESS POLICIES"]
        assert ATTACH.fullmatch(steps[detach + 1][1])[1] == table  # type: ignore[index]


def test_no_other_script_grants_the_result_tables() -> None:
    """08_grants.sql (and any other script) grants no SELECT on the result tables or views: only 10 does, after the
    policies, so a partial deploy never leaves analysts with unscoped SELECT."""
    objects = set(created(SQL_DIR / "01_tables.sql", {"TABLE", "VIEW"}))
    for path in sorted(SQL_DIR.glob("*.sql")):
        if path == SCRIPT:
            continue
        for stmt in parse(path):
            if isinstance(stmt, exp.Grant):
                securable = stmt.args["securable"].sql("snowflake").upper()
                assert securable not in objects, f"{path.name} grants {stmt.sql('snowflake')}"


def test_the_views_read_only_protected_tables() -> None:
    """The analysts' views need no policy of their own: every table they read is protected, and the policy sees the
    querying session's CURRENT_USER through a view (not the view owner's)."""
    for name, create in created(SQL_DIR / "01_tables.sql", {"VIEW"}).items():
        read = {t.name.upper() for t in create.expression.find_all(exp.Table)}
        assert read and read <= set(EXPECTED), (name, read)


def test_the_deployer_may_create_policies_and_switches_to_itself() -> None:
    steps = _statements()
    texts = [t for _, t in steps]
    admin = texts.index(f"USE ROLE {ROLES['admin']}")
    grant = texts.index(f"GRANT CREATE ROW ACCESS POLICY ON SCHEMA {DB}.{SCHEMA} TO ROLE {ROLES['deployer']}")
    deployer = texts.index(f"USE ROLE {ROLES['deployer']}")
    schema = texts.index(f"USE SCHEMA {DB}.{SCHEMA}")
    first_policy = min(i for i, (k, _) in enumerate(steps) if k == "Create ROW ACCESS POLICY")
    assert admin < grant < deployer < schema < first_policy


@pytest.mark.parametrize("name", ["WHISPER_OWNER_ROWS", "WHISPER_JOB_ROWS", "WHISPER_BATCH_ROWS"])
def test_policies_carry_a_comment(name: str) -> None:
    props = policies()[name].args["properties"].expressions
    assert any(isinstance(p, exp.SchemaCommentProperty) and "spcs-whisper" in p.this.this for p in props)
