"""The start-time Cortex check (service/translate/cortex_account.py): which translate function the account
has, and whether CORTEX_ENABLED_CROSS_REGION lets cortex-complete reach its model.

Snowpark local testing (Snowflake's emulator) has no account parameters and no SQL (`session.sql` raises
NotImplementedError), so the parameter's value is injected, or read from a FAKE session whose `sql()` records
the statement and answers a row shaped like Snowflake's SHOW PARAMETERS output (key, value, default, level,
description, type). AI_TRANSLATE in the emulator is a STAND-IN registered with `snowflake.snowpark.mock.patch`
(not Snowflake's function); without it, the emulator answers "Function AI_TRANSLATE is not implemented", as an
account without AI_TRANSLATE answers "Unknown function AI_TRANSLATE".

Rules, from https://docs.snowflake.com/en/user-guide/snowflake-cortex/cross-region-inference: the parameter is
DISABLED by default, set with ALTER ACCOUNT by ACCOUNTADMIN to 'ANY_REGION' or to region groups such as
'AWS_US' / 'AZURE_US' (comma-separated); an OpenAI model from outside its regions needs AZURE_US or ANY_REGION.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from snowflake.snowpark import Row, Session
from snowflake.snowpark.mock import ColumnEmulator, patch
from snowflake.snowpark.mock._functions import MockedFunctionRegistry

from service.config import Settings
from service.translate.cortex import AI_TRANSLATE_FUNCTION, TRANSLATE_FUNCTION, CortexTranslate
from service.translate.cortex_account import (
    SHOW_CROSS_REGION,
    check_cortex,
    check_cortex_at_start,
    cross_region_problems,
    read_cross_region,
)

ALTER_ANY_REGION = "ALTER ACCOUNT SET CORTEX_ENABLED_CROSS_REGION = 'ANY_REGION';"
COMPLETE = Settings(translate_method="cortex-complete", cortex_model="openai-gpt-4.1")


class FakeSession:
    """FAKE Snowpark session (not Snowflake): `sql()` records the statement; `collect()` answers `rows`."""

    def __init__(self, rows: list[Row] | Exception) -> None:
        self.rows = rows
        self.statements: list[str] = []

    def sql(self, statement: str) -> Any:
        self.statements.append(statement)
        return self

    def collect(self) -> list[Row]:
        if isinstance(self.rows, Exception):
            raise self.rows
        return self.rows


def parameter_row(value: str) -> Row:
    """A row as SHOW PARAMETERS answers it."""
    return Row(
        key="CORTEX_ENABLED_CROSS_REGION",
        value=value,
        default="DISABLED",
        level="ACCOUNT" if value != "DISABLED" else "",
        description="Allows inference requests to be processed in other regions",
        type="STRING",
    )


class Sessions:
    def __init__(self, session: Any) -> None:
        self.session = session

    def get(self) -> Any:
        return self.session

    def invalidate(self) -> None:
        pass


@pytest.fixture(scope="module")
def local_session() -> Iterator[Session]:
    session = Session.builder.config("local_testing", True).create()
    yield session
    session.close()


@pytest.fixture
def standin_ai_translate() -> Iterator[list[tuple[str, str, str]]]:
    """STAND-IN for AI_TRANSLATE (not Snowflake's): echoes the text; records the rows it got."""
    calls: list[tuple[str, str, str]] = []

    def standin(text: ColumnEmulator, source: ColumnEmulator, target: ColumnEmulator, details: object = None) -> Any:
        calls.extend(zip(text, source, target))
        return ColumnEmulator(list(text))

    patch("ai_translate")(standin)
    yield calls
    MockedFunctionRegistry.get_or_create().unregister("ai_translate")


def test_an_openai_model_with_cross_region_disabled_names_the_alter_statement(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.translate.cortex_account"):
        problems = check_cortex(mock.Mock(), COMPLETE, cross_region="DISABLED")
    (problem,) = problems
    assert "openai-gpt-4.1" in problem and "CORTEX_ENABLED_CROSS_REGION is DISABLED" in problem
    assert f"An ACCOUNTADMIN must run: {ALTER_ANY_REGION}" in problem and "'AZURE_US'" in problem
    assert ALTER_ANY_REGION in caplog.text  # logged at start, where an operator sees it


@pytest.mark.parametrize("value", ["ANY_REGION", "AZURE_US", "aws_us, azure_us", "AZURE_GLOBAL"])
def test_values_that_reach_the_openai_models_are_no_problem(value: str) -> None:
    assert check_cortex(mock.Mock(), COMPLETE, cross_region=value) == []


def test_a_region_list_without_azure_gets_azure_us_added() -> None:
    (problem,) = cross_region_problems("openai-gpt-4.1", "AWS_US,AWS_EU")
    assert "is 'AWS_US,AWS_EU'" in problem
    assert "ALTER ACCOUNT SET CORTEX_ENABLED_CROSS_REGION = 'AWS_EU,AWS_US,AZURE_US';" in problem


def test_a_model_not_known_to_need_cross_region_is_no_problem() -> None:
    assert cross_region_problems("llama3.1-70b", "DISABLED") == []
    assert cross_region_problems("openai-gpt-4.1", None) == []  # not known: nothing claimed


def test_the_parameter_is_read_with_show_parameters_in_account() -> None:
    session = FakeSession([parameter_row("DISABLED")])
    (problem,) = check_cortex(session, COMPLETE)  # type: ignore[arg-type]
    assert session.statements == [SHOW_CROSS_REGION]
    assert SHOW_CROSS_REGION == "SHOW PARAMETERS LIKE 'CORTEX_ENABLED_CROSS_REGION' IN ACCOUNT"
    assert ALTER_ANY_REGION in problem
    assert check_cortex(FakeSession([parameter_row("ANY_REGION")]), COMPLETE) == []  # type: ignore[arg-type]


def test_an_unreadable_parameter_is_a_problem_that_still_names_the_statement() -> None:
    session = FakeSession(RuntimeError("stand-in: Insufficient privileges to operate on account"))
    (problem,) = check_cortex(session, COMPLETE)  # type: ignore[arg-type]
    assert "could not read CORTEX_ENABLED_CROSS_REGION" in problem and ALTER_ANY_REGION in problem


def test_only_cortex_complete_reads_the_parameter() -> None:
    session = FakeSession([parameter_row("DISABLED")])
    assert check_cortex(session, Settings(translate_method="whisper")) == []  # type: ignore[arg-type]
    assert session.statements == []


def test_the_emulator_is_skipped_without_error(local_session: Session) -> None:
    assert read_cross_region(local_session) is None  # session.sql is not implemented there
    assert check_cortex(local_session, COMPLETE) == []


def test_the_check_decides_the_translate_function_of_an_account_without_ai_translate(local_session: Session) -> None:
    translator = CortexTranslate(Sessions(local_session), max_chars=100, attempts=1, backoff_s=0)
    assert translator.function is None
    (problem,) = check_cortex(local_session, Settings(translate_method="cortex-translate"), translator)
    assert translator.function == TRANSLATE_FUNCTION and translator.method == "cortex.translate"
    assert "AI_TRANSLATE is not available in this account" in problem and "deprecates" in problem


def test_the_check_decides_ai_translate_where_the_account_has_it(
    local_session: Session, standin_ai_translate: list[tuple[str, str, str]]
) -> None:
    translator = CortexTranslate(Sessions(local_session), max_chars=100, attempts=1, backoff_s=0)
    assert check_cortex(local_session, Settings(translate_method="cortex-translate"), translator) == []
    assert translator.function == AI_TRANSLATE_FUNCTION and translator.method == "cortex.ai_translate"
    assert len(standin_ai_translate) == 1  # one one-row probe, once
    assert check_cortex(local_session, Settings(translate_method="cortex-translate"), translator) == []
    assert len(standin_ai_translate) == 1


def test_the_start_check_never_raises() -> None:
    class Down:
        def get(self) -> Any:
            raise ConnectionError("stand-in: Snowflake unreachable")

        def invalidate(self) -> None:
            pass

    settings = Settings(translate_method="cortex-translate")
    translator = CortexTranslate(Down(), max_chars=100, attempts=1, backoff_s=0)
    (problem,) = asyncio.run(check_cortex_at_start(settings, Down(), translator))
    assert "Cortex not checked at start" in problem and "unreachable" in problem
    assert translator.function is None  # the first translation decides instead
    assert asyncio.run(check_cortex_at_start(Settings(translate_method="whisper"), Down(), None)) == []
