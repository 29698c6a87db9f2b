"""Issue 18 (who spoke when) in sql/: the OBJECT overloads `TRANSCRIBE(VARCHAR, OBJECT)` and
`TRANSCRIBE_SUBMIT(VARCHAR, OBJECT)` are functions of their own (a function is its name and argument types:
https://docs.snowflake.com/en/sql-reference/sql/create-function-spcs), so each is granted (tests/unit/test_deploy.py)
and dropped by `make teardown` by its signature, and the example queries call exactly a declared signature:
never an untyped NULL where two overloads of one name take the same number of arguments, which only coercion
would resolve (https://docs.snowflake.com/en/developer-guide/udf-stored-procedure-naming-conventions). Parsed
with sqlglot's Snowflake dialect, as tests/unit/test_sql.py parses every script."""

from __future__ import annotations

import re
from pathlib import Path

import sqlglot
from sqlglot import exp

from tests.unit.test_rule_teardown import dry_run
from tests.unit.test_sql import FUNCTIONS, SQL_DIR, parse, service_functions, signature, table_name, type_name

ROOT = SQL_DIR.parent
FUNCTION_NAMES = {name for name, _ in FUNCTIONS}


def _argument_type(arg: exp.Expression) -> str | None:
    """The SQL type an example passes, where the text says it: a string literal or concatenation is VARCHAR,
    OBJECT_CONSTRUCT an OBJECT, a cast its target; NULL is "NULL" (typeless); anything else None (unknown)."""
    if isinstance(arg, exp.Null):
        return "NULL"
    if isinstance(arg, exp.Struct):  # OBJECT_CONSTRUCT(...)
        return "OBJECT"
    if isinstance(arg, exp.DPipe) or (isinstance(arg, exp.Literal) and arg.is_string):
        return "VARCHAR"
    if isinstance(arg, exp.Literal):
        return "NUMBER"
    if isinstance(arg, exp.Cast):
        return "VARCHAR" if arg.to.is_type(*exp.DataType.TEXT_TYPES) else type_name(arg.to)
    return None


def _calls(statements: list[exp.Expression]) -> list[exp.Anonymous]:
    return [c for s in statements for c in s.find_all(exp.Anonymous) if c.name.upper() in FUNCTION_NAMES]


def _readme_sql() -> list[exp.Expression]:
    """The ```sql blocks of README.md's SQL section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## SQL (Snowflake)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    assert blocks, "README.md's SQL section shows no SQL"
    return [s for block in blocks for s in sqlglot.parse(block, read="snowflake") if s is not None]


def test_the_object_overloads_share_their_siblings_paths() -> None:
    functions = service_functions()
    for name, path in (("TRANSCRIBE", "/functions/transcribe"), ("TRANSCRIBE_SUBMIT", "/functions/submit")):
        create = functions[(name, ("VARCHAR", "OBJECT"))]
        assert create.expression.this == path, name  # the gateway reads the value: object, text or null
    text = (SQL_DIR / "03_service_functions.sql").read_text()
    for page in (
        "https://docs.snowflake.com/en/developer-guide/udf-stored-procedure-naming-conventions",
        "https://docs.snowflake.com/en/sql-reference/external-functions-data-format",
    ):
        assert page in text, f"03_service_functions.sql should cite {page} where it explains the OBJECT overloads"


def test_teardown_drops_every_function_signature() -> None:
    """`make teardown` drops each signature (DROP FUNCTION takes the argument types; one that is left behind
    is a function bound to a dropped service)."""
    dropped = set()
    for statement in dry_run():
        parsed = sqlglot.parse_one(statement, read="snowflake")
        if isinstance(parsed, exp.Drop) and parsed.kind == "FUNCTION":
            types = tuple(type_name(t) for t in parsed.expressions)
            dropped.add(signature(table_name(parsed), types))
    declared = {signature(name, types) for name, types in FUNCTIONS}
    assert declared <= dropped, f"not dropped by make teardown: {sorted(declared - dropped)}"


def test_examples_call_declared_signatures_without_coercion() -> None:
    """Every call of a service function in the example queries and the README matches a declared signature
    argument for argument; in particular none passes an untyped NULL to a name with two overloads of its arity."""
    declared = set(FUNCTIONS)
    problems = []
    for where, statements in (
        ("90_example_queries.sql", parse(SQL_DIR / "90_example_queries.sql")),
        ("README.md", _readme_sql()),
    ):
        for call in _calls(statements):
            types = tuple(_argument_type(a) for a in call.expressions)
            name = call.name.upper()
            candidates = [t for n, t in declared if n == name and len(t) == len(types)]
            fits = [t for t in candidates if all(a in (None, "NULL", b) for a, b in zip(types, t, strict=True))]
            if len(fits) != 1:
                problems.append(f"{where}: {call.sql('snowflake')} matches {fits or 'no signature'}")
    assert not problems, problems


def test_examples_show_who_spoke_when() -> None:
    """The examples call TRANSCRIBE with OBJECT_CONSTRUCT('speakers', TRUE) and flatten the segments into
    speaker, start, end and text (90_example_queries.sql and the README's SQL section)."""
    for where, statements in (
        ("90_example_queries.sql", parse(SQL_DIR / "90_example_queries.sql")),
        ("README.md", _readme_sql()),
    ):
        speakers_calls = [
            c
            for c in _calls(statements)
            if c.name.upper() == "TRANSCRIBE"
            and len(c.expressions) == 2
            and isinstance(c.expressions[1], exp.Struct)
            and any(
                isinstance(p, exp.PropertyEQ) and p.this.name == "speakers" and isinstance(p.expression, exp.Boolean)
                for p in c.expressions[1].expressions
            )
        ]
        assert speakers_calls, f"{where}: no TRANSCRIBE(source, OBJECT_CONSTRUCT('speakers', TRUE, ...))"
        flattened = []
        for statement in statements:
            if not any(isinstance(lateral.this, exp.Explode) for lateral in statement.find_all(exp.Lateral)):
                continue
            keys = {
                p.name
                for cast in statement.find_all(exp.JSONExtract)
                for p in cast.expression.expressions
                if isinstance(p, exp.JSONPathKey)
            }
            if {"speaker", "start", "end", "text"} <= keys:
                flattened.append(statement)
        assert flattened, f"{where}: no query flattens the segments into speaker, start, end and text"


def test_upgrade_notes_say_how_a_new_function_arrives() -> None:
    """`make upgrade` only alters the services: the notes say that new functions need 03 and 08 again."""
    readme = (SQL_DIR / "README.md").read_text()
    assert "TRANSCRIBE(VARCHAR, OBJECT)" in readme and "make deploy-services" in readme
    assert Path(SQL_DIR / "08_grants.sql").read_text().count("ON FUNCTION TRANSCRIBE(VARCHAR, OBJECT)") == 1
