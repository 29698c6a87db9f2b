"""The Snowflake tables the export writes: made by `make deploy` (sql/01_tables.sql), only checked here.

The gateway never runs DDL on an account. `CREATE OR REPLACE VIEW` at every start dropped the analysts' grants
on the views (grants survive a replace only with COPY GRANTS, which 01_tables.sql now uses), and the
service's role should not need CREATE privileges at all. At start the gateway reads each table's columns (a
DESCRIBE: metadata only, no warehouse) and refuses to start, saying what to run, when a table or a column is
missing. Snowpark's local emulator has no DDL, so there the tables are made from the same column lists.
https://docs.snowflake.com/en/sql-reference/sql/create-view (OR REPLACE drops grants unless COPY GRANTS)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from service.storage.snowflake_schema import TABLES, TableSpec
from service.storage.snowflake_session import is_local

if TYPE_CHECKING:
    from snowflake.snowpark import Session

DDL_PATH = Path(__file__).resolve().parents[2] / "sql" / "01_tables.sql"


class SchemaMismatch(RuntimeError):
    """The account's tables are not those of sql/01_tables.sql: the gateway must not start."""


def ddl_statements(path: Path = DDL_PATH) -> list[str]:
    """The statements of sql/01_tables.sql, comments dropped."""
    from snowflake.connector.util_text import split_statements

    with path.open(encoding="utf-8") as handle:
        text = handle.read()
    statements = (s.strip().rstrip(";").strip() for s, _ in split_statements(io.StringIO(text), remove_comments=True))
    return [s for s in statements if s]


def create_tables(session: Session) -> None:
    """The emulator only: empty typed frames make the tables (it runs no SQL text)."""
    for spec in TABLES:
        session.create_dataframe([], schema=spec.struct()).write.save_as_table(spec.name, mode="ignore")


def missing_columns(session: Session, spec: TableSpec) -> list[str] | None:
    """The table's columns the service needs but the account lacks; None when the table itself is missing."""
    from snowflake.snowpark.exceptions import SnowparkSQLException

    try:
        present = {field.name.strip('"').upper() for field in session.table(spec.name).schema.fields}
    except SnowparkSQLException as exc:
        if "does not exist" in str(exc).lower() or getattr(exc, "sql_error_code", None) == 2003:
            return None
        raise
    return [name for name in spec.names if name not in present]


def check_tables(session: Session) -> None:
    """Raise SchemaMismatch naming every missing table and column, and what to run."""
    problems = []
    for spec in TABLES:
        missing = missing_columns(session, spec)
        if missing is None:
            problems.append(f"table {spec.name} does not exist")
        elif missing:
            problems.append(f"table {spec.name} lacks {', '.join(missing)}")
    if problems:
        raise SchemaMismatch(
            "the Snowflake tables do not match this release: "
            + "; ".join(problems)
            + ". Run sql/01_tables.sql as the deployer role (`make deploy-objects`, or `snow sql -f "
            "sql/01_tables.sql` in the service's database and schema), then restart the service."
        )


def prepare_tables(session: Session) -> None:
    """Before the export's first write: the emulator gets its tables, an account is checked."""
    if is_local(session):
        create_tables(session)
    check_tables(session)
