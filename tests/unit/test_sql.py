"""The SQL scripts under sql/: they parse as Snowflake SQL, the service functions point at routes the gateway
serves, and the example queries only use service tables, columns and stages that the numbered scripts create."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel
from starlette.routing import Match

from deploy.config import RUNTIME_SQL_VARS, fill_sql, load, sql_vars

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
SQL_FILES = sorted(SQL_DIR.glob("*.sql"))

SERVICE = "WHISPER_GATEWAY"  # the gateway service and the endpoint its functions call, as the spec names them
ENDPOINT = "functions"  # not public: the service functions' own door (the public endpoint is `api`)
SERVICE_OBJECTS = {
    "TRANSCRIPTION_JOBS",
    "TRANSCRIPTIONS",
    "TRANSLATIONS",
    "TRANSCRIPTION_BATCHES",
    "WHISPER_DEMO_OUTPUT",
    "WHISPER_DEMO_TRANSLATION",
}
# (name, argument types) -> HTTP path: the service functions 03_service_functions.sql must declare. A function is
# its name AND its argument types (https://docs.snowflake.com/en/sql-reference/sql/create-function-spcs): the
# overloads of one name are separate functions, each granted and dropped by its signature.
FUNCTIONS = {
    ("TRANSCRIBE", ("VARCHAR", "VARCHAR")): "/functions/transcribe",
    ("TRANSCRIBE", ("VARCHAR",)): "/functions/transcribe",
    ("TRANSCRIBE", ("VARCHAR", "OBJECT")): "/functions/transcribe",
    ("TRANSCRIBE_SUBMIT", ("VARCHAR", "VARCHAR", "VARCHAR")): "/functions/submit",
    ("TRANSCRIBE_SUBMIT", ("VARCHAR", "OBJECT")): "/functions/submit",
    ("TRANSCRIPTION_STATUS", ("VARCHAR",)): "/functions/job_status",
    ("WHISPER_DRAIN", ("NUMBER",)): "/functions/drain",
}
Signature = tuple[str, tuple[str, ...]]

# sqlglot (>= 30) models CREATE FUNCTION ... SERVICE = ... ENDPOINT = ... AS '/path' natively, so the service
# functions are checked as parsed trees. Some legitimate Snowflake statements it does not model at all: for
# those it logs "contains unsupported syntax. Falling back to parsing as a 'Command'" and keeps the raw text
# (sqlglot's documented fallback, exp.Command). That fallback would also swallow a typo, so a Command is
# accepted only when its text is one of the statements below, matched in full.
COMMAND_STATEMENTS = [
    r"ALTER STAGE \w+ REFRESH",  # refresh an internal stage's directory table after PUT
    # SPCS and account setup (deploy scripts): no sqlglot model for these objects.
    r"CREATE (OR REPLACE )?(COMPUTE POOL|SERVICE|IMAGE REPOSITORY|ROLE|NETWORK RULE|EXTERNAL ACCESS INTEGRATION|SECRET)"
    r"( IF NOT EXISTS)? [\w.$\"]+\b.*",
    r"ALTER (COMPUTE POOL|SERVICE) [\w.$\"]+ .+",
    r"DROP (COMPUTE POOL|SERVICE|IMAGE REPOSITORY|SECRET) IF EXISTS [\w.$\"]+",
    r"(GRANT|REVOKE) (SERVICE ROLE|ROLE|DATABASE ROLE|USAGE ON COMPUTE POOL|MONITOR ON COMPUTE POOL"
    r"|OPERATE ON COMPUTE POOL) .+",
    r"SHOW (ENDPOINTS|SERVICE CONTAINERS) IN SERVICE [\w.$\"]+",
    # Row access policies (10_row_access.sql): a new body for an existing policy (the same body as its CREATE,
    # which is parsed: tests/unit/test_row_access_sql.py compares them), and attaching a policy to columns.
    r"ALTER ROW ACCESS POLICY \w+ SET BODY -> .+",
    r"ALTER TABLE \w+ ADD ROW ACCESS POLICY \w+ ON \(\w+(, \w+)*\)",
    r"DROP ROW ACCESS POLICY IF EXISTS \w+",  # 99_teardown_data.sql
]
# sqlglot 30 does not model CREATE ROW ACCESS POLICY at all: it raises (it expects the `WITH ROW ACCESS POLICY name ON
# (cols)` clause of CREATE TABLE) instead of falling back to a Command. Such a statement is parsed here instead: its
# name and signature by this pattern (the signature as a column list), its body by sqlglot as a Snowflake expression,
# into an exp.Create of kind "ROW ACCESS POLICY". Anything else starting like it still goes to sqlglot, and fails.
# https://docs.snowflake.com/en/sql-reference/sql/create-row-access-policy
ROW_ACCESS_POLICY = re.compile(
    r"^[ \t]*CREATE\s+(?P<replace>OR\s+REPLACE\s+)?ROW\s+ACCESS\s+POLICY\s+(?P<exists>IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<name>[A-Za-z_][\w$]*)\s+AS\s*\((?P<signature>[^)]*)\)\s*RETURNS\s+BOOLEAN\s*->(?P<body>[^;]*?)"
    r"(?:\s+COMMENT\s*=\s*(?P<comment>'(?:[^']|'')*'))?\s*;",
    re.IGNORECASE | re.MULTILINE,
)
# The deploy scripts name objects with Snowflake CLI template variables (`<% name %>`), which `make deploy` fills
# with `snow sql -D name=value` from deploy/config.yaml. They are parsed as they will run: filled the same way
# (secret values, which come from the caller, with placeholders). An unknown variable fails the parse.
SQL_VARS = {**sql_vars(load()), **{name: f"placeholder-{name}" for name in RUNTIME_SQL_VARS}}


def parse(path: Path) -> list[exp.Expression]:
    """Every statement of a file, comment-only pieces (sqlglot's exp.Semicolon) left out."""
    text = fill_sql(path.read_text(), SQL_VARS)
    statements: list[exp.Expression] = []
    start = 0
    for match in ROW_ACCESS_POLICY.finditer(text):
        statements += _parse_sql(text[start : match.start()])
        statements.append(row_access_policy(match))
        start = match.end()
    return statements + _parse_sql(text[start:])


def _parse_sql(text: str) -> list[exp.Expression]:
    statements = sqlglot.parse(text, read="snowflake", error_level=ErrorLevel.RAISE)
    return [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]


def row_access_policy(match: re.Match[str]) -> exp.Create:
    """CREATE ROW ACCESS POLICY as exp.Create(kind="ROW ACCESS POLICY"): `this` an exp.Schema (the policy's name and
    its signature as column definitions), `expression` the parsed body, COMMENT as a SchemaCommentProperty."""
    (schema,) = _parse_sql(f"CREATE TABLE {match['name']} ({match['signature']})")
    body = sqlglot.parse_one(match["body"], read="snowflake", error_level=ErrorLevel.RAISE)
    assert isinstance(body, exp.Condition) and not isinstance(body, exp.Query), f"not a boolean body: {match[0]!r}"
    comment = match["comment"]
    props = [exp.SchemaCommentProperty(this=exp.Literal.string(comment[1:-1].replace("''", "'")))] if comment else []
    return exp.Create(
        this=schema.this,
        kind="ROW ACCESS POLICY",
        expression=body,
        exists=bool(match["exists"]),
        replace=bool(match["replace"]),
        properties=exp.Properties(expressions=props),
    )


def command_text(command: exp.Command) -> str:
    return " ".join(command.sql("snowflake", comments=False).split())


def table_name(node: exp.Expression) -> str:
    table = node if isinstance(node, exp.Table) else node.find(exp.Table)
    assert table is not None, node.sql("snowflake")
    return table.name.upper()


def created(path: Path, kinds: set[str]) -> dict[str, exp.Create]:
    """The objects a script creates, by upper-case name (database and schema left out)."""
    return {
        table_name(stmt.this): stmt
        for stmt in parse(path)
        if isinstance(stmt, exp.Create) and (stmt.args.get("kind") or "").upper() in kinds
    }


def properties(create: exp.Create) -> dict[str, exp.Expression]:
    props = create.args.get("properties")
    return {
        p.name.upper(): p.args["value"]
        for p in (props.expressions if props else [])
        if type(p) is exp.Property  # generic NAME = value properties (RETURNS etc. are subclasses)
    }


def type_name(kind: exp.DataType) -> str:
    """An argument type as Snowflake names it in a signature (GRANT ... ON FUNCTION f(VARCHAR, OBJECT))."""
    return "NUMBER" if kind.is_type(exp.DataType.Type.DECIMAL) else kind.this.value


def signature(name: str, types: tuple[str, ...]) -> str:
    return f"{name}({', '.join(types)})"


def service_functions() -> dict[Signature, exp.Create]:
    """Every service function of sql/, by (name, argument types)."""
    functions = {}
    for path in SQL_FILES:
        for stmt in parse(path):
            if isinstance(stmt, exp.Create) and stmt.kind == "FUNCTION" and "SERVICE" in properties(stmt):
                udf = stmt.this
                key = (table_name(udf.this), tuple(type_name(arg.kind) for arg in udf.expressions))
                assert key not in functions, f"{key} declared twice"
                functions[key] = stmt
    return functions


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_sql_file_parses_as_snowflake(path: Path) -> None:
    statements = parse(path)
    assert statements, f"{path.name}: no statements"
    for stmt in statements:
        if isinstance(stmt, exp.Command):
            text = command_text(stmt)
            assert any(re.fullmatch(p, text, re.IGNORECASE) for p in COMMAND_STATEMENTS), (
                f"{path.name}: sqlglot could not parse {text!r} (it fell back to a raw Command); fix the statement, "
                "or, if it is valid Snowflake SQL that sqlglot does not model, add it to COMMAND_STATEMENTS"
            )


def test_sql_files_exist() -> None:
    names = {p.name for p in SQL_FILES}
    assert {"02_stages.sql", "03_service_functions.sql", "90_example_queries.sql"} <= names


def test_service_functions_are_declared_as_expected() -> None:
    functions = service_functions()
    assert set(functions) == set(FUNCTIONS)
    for key, create in functions.items():
        props = properties(create)
        assert create.args.get("replace"), f"{key}: not CREATE OR REPLACE (the script must be re-runnable)"
        assert isinstance(create.expression, exp.Literal) and create.expression.is_string, key
        assert create.expression.this == FUNCTIONS[key], key
        assert props["SERVICE"].sql("snowflake") == SERVICE, key
        assert props["ENDPOINT"].sql("snowflake") == ENDPOINT, key
        returns = create.find(exp.ReturnsProperty)
        assert returns is not None and returns.this.is_type(exp.DataType.Type.VARIANT), key
        rows = props.get("MAX_BATCH_ROWS")
        assert isinstance(rows, exp.Literal) and rows.is_int, f"{key}: MAX_BATCH_ROWS must be an integer"
    # Transcription is long GPU work per row: small batches spread a query's rows over the replicas. The overloads
    # that share a path are one function to the gateway: the same batch size, retries and timeout.
    batching = ("MAX_BATCH_ROWS", "MAX_BATCH_RETRIES", "BATCH_TIMEOUT_SECS")
    for path in set(FUNCTIONS.values()):
        sharing = [properties(functions[key]) for key, served in FUNCTIONS.items() if served == path]
        settings = {tuple(p[name].sql("snowflake") if name in p else None for name in batching) for p in sharing}
        assert len(settings) == 1, f"{path}: its overloads batch differently: {settings}"
    for key in FUNCTIONS:
        if key[0] == "TRANSCRIBE":
            assert int(properties(functions[key])["MAX_BATCH_ROWS"].this) <= 16, key
            # The caller's user name goes to the service with every TRANSCRIBE batch.
            assert properties(functions[key])["CONTEXT_HEADERS"].find(exp.CurrentUser) is not None, key


def test_service_function_paths_are_gateway_routes(tmp_path: Path) -> None:
    """Each AS '/functions/...' path must reach a POST route of the gateway, or Snowflake gets a 404 per batch.

    The routes are matched the way a request is (Starlette's BaseRoute.matches): FastAPI 0.165 keeps included
    routers as nested route objects, so `[r.path for r in app.routes]` no longer lists their paths."""
    from service.api.app import create_app
    from service.config import Settings

    app = create_app(Settings(data_dir=tmp_path))

    def served(path: str) -> bool:
        scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in app.routes)

    paths = {create.expression.this for create in service_functions().values()}
    assert paths == set(FUNCTIONS.values())
    missing = sorted(p for p in paths if not served(p))
    assert not missing, f"no POST route in the gateway for {missing}"


def test_example_queries_use_service_objects_that_01_creates() -> None:
    examples = parse(SQL_DIR / "90_example_queries.sql")
    used = {t.name.upper() for stmt in examples for t in stmt.find_all(exp.Table) if t.name} & SERVICE_OBJECTS
    assert used == SERVICE_OBJECTS, f"the examples do not show {sorted(SERVICE_OBJECTS - used)}"
    tables = SQL_DIR / "01_tables.sql"
    assert tables.exists(), "sql/01_tables.sql is missing"
    made = created(tables, {"TABLE", "VIEW"})
    assert used <= set(made), f"used in 90_example_queries.sql but not created in 01_tables.sql: {used - set(made)}"


def test_example_queries_use_columns_that_01_declares() -> None:
    """Columns the examples take from a service table or view (qualified, e.g. `t.TEXT`) exist in 01_tables.sql."""
    declared = {
        name: {e.name.upper() for e in create.this.expressions}
        for name, create in created(SQL_DIR / "01_tables.sql", {"TABLE", "VIEW"}).items()
        if isinstance(create.this, exp.Schema)  # a view without a column list declares none: not checked
    }
    unknown = []
    for stmt in parse(SQL_DIR / "90_example_queries.sql"):
        aliases = {t.alias_or_name.upper(): t.name.upper() for t in stmt.find_all(exp.Table) if t.name}
        for column in stmt.find_all(exp.Column):
            source = aliases.get(column.table.upper())
            if source in declared and column.name.upper() not in declared[source]:
                unknown.append(f"{column.table}.{column.name} ({source})")
    assert not unknown, f"not columns in 01_tables.sql: {sorted(set(unknown))}"


def test_example_stages_are_created_with_directory_and_sse() -> None:
    examples = (SQL_DIR / "90_example_queries.sql").read_text()
    used = {m.upper() for m in re.findall(r"@(\w+)", examples)}
    stages = created(SQL_DIR / "02_stages.sql", {"STAGE"})
    assert used and used <= set(stages), f"stages used but not created in 02_stages.sql: {used - set(stages)}"
    assert "MODELS" in stages, "02_stages.sql must create the MODELS stage"
    for name in {*used, "MODELS"}:
        text = " ".join(stages[name].sql("snowflake").upper().split())
        assert "DIRECTORY=(ENABLE = TRUE)" in text, name
        assert "ENCRYPTION=(TYPE = 'SNOWFLAKE_SSE')" in text, name
        assert stages[name].args.get("exists"), f"{name}: not CREATE STAGE IF NOT EXISTS"
