"""Cortex translators against Snowpark local testing (Snowflake's own emulator), with Cortex STAND-INS.

Local testing has no Cortex: every `standin_*` function below is a stand-in registered with
`snowflake.snowpark.mock.patch`, NOT Snowflake's model. The stand-ins record what the translators send and
answer predictably (a tiny Hindi->English word list, upper-casing the rest), so the tests check the
translators' side: splitting, ordering, arguments, prompts, retries. The generated SQL is checked on a
Snowpark session whose connector is a mock (it builds real Snowflake SQL and runs nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from unittest import mock

import pytest
from snowflake.connector import SnowflakeConnection
from snowflake.connector.cursor import SnowflakeCursor
from snowflake.snowpark import Session
from snowflake.snowpark.mock import ColumnEmulator, patch
from snowflake.snowpark.mock._functions import MockedFunctionRegistry

from service.config import Settings
from service.translate.base import TranslationError
from service.translate.cortex import CortexComplete, CortexTranslate, make_translator

STANDIN_DICTIONARY = {"नमस्ते": "hello", "दुनिया": "world", "मेरा": "my", "नाम": "name", "है": "is", "राम": "Ram"}
HINDI_SENTENCE = "नमस्ते दुनिया। मेरा नाम राम है।"


class StandinCortex:
    """State of the Cortex stand-ins: the rows each call got, and failures to raise before answering."""

    def __init__(self) -> None:
        self.translate_calls: list[list[tuple[str, str, str]]] = []
        self.complete_calls: list[list[tuple[str, str]]] = []
        self.failures: list[Exception] = []  # raised one per call, in order, before answering

    def maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)


def standin_translate_word(word: str) -> str:
    """Stand-in translation of one word: the little dictionary, else upper case."""
    core = word.rstrip("।॥.?!")
    return STANDIN_DICTIONARY.get(core, core.upper()) + ("." if core != word else "")


@pytest.fixture
def cortex() -> Iterator[StandinCortex]:
    """Registers the Cortex stand-ins (mock.patch names are lower-case) and removes them afterwards."""
    state = StandinCortex()

    def standin_translate(text: ColumnEmulator, source: ColumnEmulator, target: ColumnEmulator) -> ColumnEmulator:
        """STAND-IN for SNOWFLAKE.CORTEX.TRANSLATE (not Snowflake's)."""
        state.translate_calls.append(list(zip(text, source, target)))
        state.maybe_fail()
        return ColumnEmulator([" ".join(standin_translate_word(w) for w in t.split()) for t in text])

    def standin_complete(model: ColumnEmulator, prompt: ColumnEmulator) -> ColumnEmulator:
        """STAND-IN for SNOWFLAKE.CORTEX.COMPLETE (not Snowflake's): answers with the text after the blank line."""
        state.complete_calls.append(list(zip(model, prompt)))
        state.maybe_fail()
        return ColumnEmulator([f" EN[{p.split(chr(10) * 2, 1)[-1].upper()}] " for p in prompt])

    patch("snowflake.cortex.translate")(standin_translate)
    patch("snowflake.cortex.complete")(standin_complete)
    yield state
    registry = MockedFunctionRegistry.get_or_create()
    registry.unregister("snowflake.cortex.translate")
    registry.unregister("snowflake.cortex.complete")


@pytest.fixture(scope="module")
def local_session() -> Iterator[Session]:
    session = Session.builder.config("local_testing", True).create()
    yield session
    session.close()


class LocalSessions:
    """A session provider for tests: always the local testing session; counts invalidations."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.invalidated = 0

    def get(self) -> Session:
        return self.session

    def invalidate(self) -> None:
        self.invalidated += 1


@pytest.fixture
def sessions(local_session: Session) -> LocalSessions:
    return LocalSessions(local_session)


def test_short_text_one_call(cortex: StandinCortex, sessions: LocalSessions) -> None:
    translator = CortexTranslate(sessions, max_chars=3000, attempts=3, backoff_s=0)
    assert translator.method == "cortex.translate"
    assert asyncio.run(translator.translate(HINDI_SENTENCE, "hi", "en")) == "hello world. my name Ram is."
    assert cortex.translate_calls == [[(HINDI_SENTENCE, "hi", "en")]]


def test_long_text_split_into_pieces_in_order(cortex: StandinCortex, sessions: LocalSessions) -> None:
    sentences = [f"वाक्य{i} नमस्ते दुनिया।" for i in range(40)]
    translator = CortexTranslate(sessions, max_chars=100, attempts=3, backoff_s=0)
    result = asyncio.run(translator.translate(" ".join(sentences), None, "en"))
    assert result == " ".join(f"वाक्य{i}".upper() + " hello world." for i in range(40))
    (rows,) = cortex.translate_calls  # one query, one row per piece
    assert len(rows) > 5
    assert all(len(text) <= 100 and source == "" and target == "en" for text, source, target in rows)
    assert " ".join(text for text, _, _ in rows) == " ".join(sentences)


def test_batches_of_rows_become_separate_queries(cortex: StandinCortex, sessions: LocalSessions) -> None:
    translator = CortexTranslate(sessions, max_chars=5, attempts=3, backoff_s=0)
    translator.max_query_rows = 4
    text = " ".join(f"s{i}." for i in range(10))
    assert asyncio.run(translator.translate(text, "hi", "en")) == " ".join(f"S{i}." for i in range(10))
    assert [len(rows) for rows in cortex.translate_calls] == [4, 4, 2]


def test_empty_text_calls_nothing(cortex: StandinCortex, sessions: LocalSessions) -> None:
    translator = CortexTranslate(sessions, max_chars=100, attempts=3, backoff_s=0)
    assert asyncio.run(translator.translate("  \n ", "hi", "en")) == ""
    assert cortex.translate_calls == []


def test_complete_gets_model_and_filled_prompt(cortex: StandinCortex, sessions: LocalSessions) -> None:
    template = "Translate the following {source_language} text into {target_language}.\n\n{text}"
    translator = CortexComplete(sessions, "openai-gpt-4.1", template, max_chars=3000, attempts=3, backoff_s=0)
    assert translator.method == "cortex.complete:openai-gpt-4.1"
    text = "नमस्ते {target_language} दुनिया।"  # braces in the transcript are not placeholders
    assert asyncio.run(translator.translate(text, "hi", "en")) == f"EN[{text.upper()}]"
    assert cortex.complete_calls == [
        [("openai-gpt-4.1", f"Translate the following Hindi text into English.\n\n{text}")]
    ]

    cortex.complete_calls.clear()
    asyncio.run(translator.translate("hola.", None, "en"))
    assert cortex.complete_calls[0][0][1].startswith("Translate the following the source language text into English.")


def test_transient_failures_are_retried(cortex: StandinCortex, sessions: LocalSessions) -> None:
    cortex.failures = [ConnectionError("stand-in: connection reset"), RuntimeError("stand-in: 429 too many requests")]
    translator = CortexTranslate(sessions, max_chars=100, attempts=3, backoff_s=0.001)
    assert asyncio.run(translator.translate("नमस्ते दुनिया।", "hi", "en")) == "hello world."
    assert len(cortex.translate_calls) == 3
    assert sessions.invalidated == 1  # after the connection failure only


def test_gives_up_after_all_attempts(cortex: StandinCortex, sessions: LocalSessions) -> None:
    cortex.failures = [RuntimeError("stand-in: service unavailable")] * 10
    translator = CortexComplete(sessions, "m", "{text}", max_chars=100, attempts=4, backoff_s=0.001)
    with pytest.raises(TranslationError) as info:
        asyncio.run(translator.translate("hello.", "en", "de"))
    assert len(cortex.complete_calls) == 4
    assert info.value.code == "translation_failed" and not info.value.transient
    assert "4 time(s)" in info.value.message and "service unavailable" in info.value.message


def test_bad_input_is_not_retried(cortex: StandinCortex, sessions: LocalSessions) -> None:
    cortex.failures = [ValueError("stand-in: unsupported language 'xx'")] * 3
    translator = CortexTranslate(sessions, max_chars=100, attempts=3, backoff_s=0.001)
    with pytest.raises(TranslationError, match="rejected the input.*unsupported language"):
        asyncio.run(translator.translate("hello.", "xx", "en"))
    assert len(cortex.translate_calls) == 1


def test_make_translator() -> None:
    provider = mock.Mock()
    assert isinstance(make_translator(Settings(translate_method="cortex-translate"), provider), CortexTranslate)
    complete = make_translator(Settings(translate_method="cortex-complete", cortex_model="llama3.1-70b"), provider)
    assert isinstance(complete, CortexComplete) and complete.method == "cortex.complete:llama3.1-70b"
    assert make_translator(Settings(translate_method="whisper"), provider) is None
    assert isinstance(make_translator(Settings(store="snowflake"), provider), CortexTranslate)
    assert make_translator(Settings(store="sqlite"), provider) is None


@pytest.fixture
def sql_session() -> Iterator[Session]:
    """A Snowpark session on a mock connector: it generates real Snowflake SQL and executes nothing."""
    connection = mock.create_autospec(SnowflakeConnection)
    connection._telemetry = None
    connection._session_parameters = {}
    connection._paramstyle = "qmark"
    connection.is_closed.return_value = False
    connection.cursor.return_value = mock.create_autospec(SnowflakeCursor)
    session = Session.builder.configs({"connection": connection}).create()
    yield session
    session.close()


def test_generated_sql_calls_cortex_with_escaped_values(sql_session: Session) -> None:
    hostile = "it's'); DROP TABLE JOBS; --"
    translate = CortexTranslate(mock.Mock(), max_chars=100, attempts=1, backoff_s=0)
    (query,) = translate.frame(sql_session, [hostile, "second"], None, "en").queries["queries"]
    assert "SNOWFLAKE.CORTEX.TRANSLATE(\"TEXT\", '', 'en')" in query
    assert hostile not in query and "'it''s''); DROP TABLE JOBS; --'" in query  # a quoted literal, nothing more
    assert query.rstrip().endswith('ORDER BY "I" ASC NULLS FIRST')

    complete = CortexComplete(mock.Mock(), "openai-gpt-4.1", "{source_language}: {text}", 100, 1, 0)
    (query,) = complete.frame(sql_session, complete.inputs([hostile], "hi", "en"), "hi", "en").queries["queries"]
    assert "SNOWFLAKE.CORTEX.COMPLETE('openai-gpt-4.1', \"TEXT\")" in query
    assert f"Hindi: {hostile}" not in query and "'Hindi: it''s''); DROP TABLE JOBS; --'" in query


def test_generated_sql_stays_below_snowparks_temporary_table_threshold(sql_session: Session) -> None:
    translate = CortexTranslate(mock.Mock(), max_chars=100, attempts=1, backoff_s=0)
    inputs = ["piece"] * translate.max_query_rows
    queries = translate.frame(sql_session, inputs, "hi", "en").queries["queries"]
    assert len(queries) == 1 and "TEMPORARY" not in queries[0]
    queries = translate.frame(sql_session, [*inputs, "one more"], "hi", "en").queries["queries"]
    assert "TEMPORARY" in queries[0]  # why translate() sends at most max_query_rows rows per query
