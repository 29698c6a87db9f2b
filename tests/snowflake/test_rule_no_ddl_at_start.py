"""Issue 13, rule 3: the service never drops grants. It runs no DDL on an account (the views' CREATE OR REPLACE
at every start dropped the analysts' SELECT); `make deploy` runs sql/01_tables.sql, whose views keep their
grants with COPY GRANTS; the gateway checks the tables at start and refuses to start, saying what to run,
when they do not match. Snowflake is EMULATED (Snowpark local testing) where a session is needed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from service.storage.snowflake_schema import JOBS, TABLES, snowpark_type
from service.storage.snowflake_tables import DDL_PATH, SchemaMismatch, prepare_tables
from tests.snowflake.outage import FlakySessions, open_store, run


class AccountSession:
    """An account session as far as prepare_tables can tell (not the emulator): it records every SQL text and
    answers DESCRIBE-like schema reads from a column list."""

    def __init__(self, columns: dict[str, list[str]]) -> None:
        self.columns, self.sql_run = columns, []

    def sql(self, text: str, *_: Any) -> Any:
        self.sql_run.append(text)
        return SimpleNamespace(collect=lambda: [])

    def table(self, name: str) -> Any:
        if name not in self.columns:
            from snowflake.snowpark.exceptions import SnowparkSQLException

            raise SnowparkSQLException(f"Object '{name}' does not exist or not authorized.", sql_error_code=2003)
        fields = [SimpleNamespace(name=c) for c in self.columns[name]]
        return SimpleNamespace(schema=SimpleNamespace(fields=fields))


def test_an_account_is_checked_never_altered() -> None:
    session = AccountSession({spec.name: spec.names for spec in TABLES})
    prepare_tables(session)  # type: ignore[arg-type]
    assert session.sql_run == []  # no CREATE, no ALTER, no CREATE OR REPLACE VIEW


def test_a_missing_table_or_column_stops_the_start_with_what_to_run() -> None:
    columns = {spec.name: spec.names for spec in TABLES if spec is not JOBS}
    columns["TRANSCRIPTIONS"] = [c for c in columns["TRANSCRIPTIONS"] if c != "BODY"]
    with pytest.raises(SchemaMismatch) as refused:
        prepare_tables(AccountSession(columns))  # type: ignore[arg-type]
    message = str(refused.value)
    assert "TRANSCRIPTION_JOBS does not exist" in message and "TRANSCRIPTIONS lacks BODY" in message
    assert "sql/01_tables.sql" in message


def test_the_gateway_refuses_to_start_on_an_older_schema(tmp_path: Path, sessions: FlakySessions) -> None:
    """On the emulator: a TRANSCRIPTION_JOBS made by an older release, without OWNER."""
    from snowflake.snowpark.types import StructField, StructType

    old = StructType([StructField(c.name, snowpark_type(c.sql)) for c in JOBS.columns if c.name != "OWNER"])
    sessions.session.create_dataframe([], schema=old).write.save_as_table(JOBS.name, mode="overwrite")
    with pytest.raises(SchemaMismatch, match="TRANSCRIPTION_JOBS lacks OWNER"):
        run(open_store(tmp_path, sessions))


def test_the_views_keep_their_grants_when_replaced() -> None:
    views = [
        s
        for s in sqlglot.parse(DDL_PATH.read_text(), read="snowflake")
        if isinstance(s, exp.Create) and s.kind == "VIEW"
    ]
    assert len(views) == 2
    for view in views:
        replaces = bool(view.args.get("replace"))
        copies = any(isinstance(p, exp.CopyGrantsProperty) for p in view.find_all(exp.CopyGrantsProperty))
        assert not replaces or copies, view.sql("snowflake")
