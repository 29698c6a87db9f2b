"""Cortex translators against Snowpark local testing (Snowflake's own emulator), with Cortex STAND-INS.

Local testing has no Cortex: every `standin_*` function below is a stand-in registered with
`snowflake.snowpark.mock.patch`, NOT Snowflake's model. The stand-ins record what the translators send and
answer predictably (a tiny Hindi->English word list, upper-casing the rest), so the tests check the
translators' side: splitting, ordering, arguments, prompts, retries, which function is called, which language
codes it gets. An account without AI_TRANSLATE is the emulator with only the TRANSLATE stand-in registered
(it then says "Function AI_TRANSLATE is not implemented"), or an AI_TRANSLATE stand-in raising Snowflake's
"Unknown function" error. The generated SQL is checked on a Snowpark session whose connector is a mock (it
builds real Snowflake SQL and runs nothing).

Rules from Snowflake's documentation that these tests hold the translators to:
- AI_TRANSLATE is the current function, SNOWFLAKE.CORTEX.TRANSLATE the legacy one ("deprecated by the end of
  2026"); both take `(text, source_language, target_language)`, '' as the source = auto-detect:
  https://docs.snowflake.com/en/sql-reference/functions/ai_translate
  https://docs.snowflake.com/en/sql-reference/functions/translate-snowflake-cortex
- each takes only the language codes in its "Usage notes" table (same pages).
- a model the account's region does not serve needs CORTEX_ENABLED_CROSS_REGION:
  https://docs.snowflake.com/en/user-guide/snowflake-cortex/cross-region-inference
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from unittest import mock

import pytest
from snowflake.connector import ProgrammingError, SnowflakeConnection
from snowflake.connector.cursor import SnowflakeCursor
from snowflake.snowpark import Session
from snowflake.snowpark.mock import ColumnEmulator, patch
from snowflake.snowpark.mock._functions import MockedFunctionRegistry

from service.config import Settings
from service.translate.base import TranslationError
from service.translate.cortex import (
    AI_TRANSLATE_FUNCTION,
    TRANSLATE_FUNCTION,
    CortexComplete,
    CortexTranslate,
    make_translator,
)

STANDIN_DICTIONARY = {"नमस्ते": "hello", "दुनिया": "world", "मेरा": "my", "नाम": "name", "है": "is", "राम": "Ram"}
HINDI_SENTENCE = "नमस्ते दुनिया। मेरा नाम राम है।"


class StandinCortex:
    """State of the Cortex stand-ins: the rows each call got, and failures to raise before answering."""

    def __init__(self) -> None:
        self.ai_translate_calls: list[list[tuple[str, str, str]]] = []
        self.translate_calls: list[list[tuple[str, str, str]]] = []  # the legacy SNOWFLAKE.CORTEX.TRANSLATE
        self.complete_calls: list[list[tuple[str, str]]] = []
        self.failures: list[Exception] = []  # raised one per call, in order, before answering

    def maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)


def standin_translate_word(word: str) -> str:
    """Stand-in translation of one word: the little dictionary, else upper case."""
    core = word.rstrip("।॥.?!")
    return STANDIN_DICTIONARY.get(core, core.upper()) + ("." if core != word else "")


def standin_translation(texts: ColumnEmulator) -> ColumnEmulator:
    return ColumnEmulator([" ".join(standin_translate_word(w) for w in t.split()) for t in texts])


@pytest.fixture
def cortex() -> Iterator[StandinCortex]:
    """Registers the Cortex stand-ins (mock.patch names are lower-case) and removes them afterwards."""
    state = StandinCortex()

    def standin_ai_translate(
        text: ColumnEmulator, source: ColumnEmulator, target: ColumnEmulator, return_error_details: object = None
    ) -> ColumnEmulator:
        """STAND-IN for AI_TRANSLATE (not Snowflake's)."""
        state.ai_translate_calls.append(list(zip(text, source, target)))
        state.maybe_fail()
        return standin_translation(text)

    def standin_translate(text: ColumnEmulator, source: ColumnEmulator, target: ColumnEmulator) -> ColumnEmulator:
        """STAND-IN for SNOWFLAKE.CORTEX.TRANSLATE (not Snowflake's)."""
        state.translate_calls.append(list(zip(text, source, target)))
        state.maybe_fail()
        return standin_translation(text)

    def standin_complete(model: ColumnEmulator, prompt: ColumnEmulator) -> ColumnEmulator:
        """STAND-IN for SNOWFLAKE.CORTEX.COMPLETE (not Snowflake's): answers with the text after the blank line."""
        state.complete_calls.append(list(zip(model, prompt)))
        state.maybe_fail()
        return ColumnEmulator([f" EN[{p.split(chr(10) * 2, 1)[-1].upper()}] " for p in prompt])

    patch("ai_translate")(standin_ai_translate)
    patch("snowflake.cortex.translate")(standin_translate)
    patch("snowflake.cortex.complete")(standin_complete)
    yield state
    registry = MockedFunctionRegistry.get_or_create()
    registry.unregister("ai_translate")
    registry.unregister("snowflake.cortex.translate")
    registry.unregister("snowflake.cortex.complete")


@pytest.fixture
def legacy_cortex(cortex: StandinCortex) -> StandinCortex:
    """An account without AI_TRANSLATE: its stand-in is removed, so the emulator answers "Function AI_TRANSLATE
    is not implemented"; the legacy TRANSLATE stand-in stays."""
    MockedFunctionRegistry.get_or_create().unregister("ai_translate")
    return cortex


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
    assert asyncio.run(translator.translate(HINDI_SENTENCE, "hi", "en")) == "hello world. my name Ram is."
    assert cortex.ai_translate_calls == [[(HINDI_SENTENCE, "hi", "en")]]


def test_long_text_split_into_pieces_in_order(cortex: StandinCortex, sessions: LocalSessions) -> None:
    sentences = [f"वाक्य{i} नमस्ते दुनिया।" for i in range(40)]
    translator = CortexTranslate(sessions, max_chars=100, attempts=3, backoff_s=0)
    result = asyncio.run(translator.translate(" ".join(sentences), None, "en"))
    assert result == " ".join(f"वाक्य{i}".upper() + " hello world." for i in range(40))
    (rows,) = cortex.ai_translate_calls  # one query, one row per piece
    assert len(rows) > 5
    assert all(len(text) <= 100 and source == "" and target == "en" for text, source, target in rows)
    assert " ".join(text for text, _, _ in rows) == " ".join(sentences)


def test_batches_of_rows_become_separate_queries(cortex: StandinCortex, sessions: LocalSessions) -> None:
    translator = CortexTranslate(sessions, max_chars=5, attempts=3, backoff_s=0)
    translator.max_query_rows = 4
    text = " ".join(f"s{i}." for i in range(10))
    assert asyncio.run(translator.translate(text, "hi", "en")) == " ".join(f"S{i}." for i in range(10))
    assert [len(rows) for rows in cortex.ai_translate_calls] == [4, 4, 2]


def test_empty_text_calls_nothing(cortex: StandinCortex, sessions: LocalSessions) -> None:
    translator = CortexTranslate(sessions, max_chars=100, attempts=3, backoff_s=0)
    assert asyncio.run(translator.translate("  \n ", "hi", "en")) == ""
    assert cortex.ai_translate_calls == cortex.translate_calls == []


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
    assert len(cortex.ai_translate_calls) == 3
    assert sessions.invalidated == 1  # after the connection failure only


def test_gives_up_after_all_attempts(cortex: StandinCortex, sessions: LocalSessions) -> None:
    cortex.failures = [RuntimeError("stand-in: service unavailable")] * 10
    translator = CortexComplete(sessions, "m", "{text}", max_chars=100, attempts=4, backoff_s=0.001)
    with pytest.raises(TranslationError) as info:
        asyncio.run(translator.translate("hello.", "en", "de"))
    assert len(cortex.complete_calls) == 4
    assert info.value.code == "translation_failed" and not info.value.retryable
    assert "4 time(s)" in info.value.message and "service unavailable" in info.value.message


def test_bad_input_is_not_retried(cortex: StandinCortex, sessions: LocalSessions) -> None:
    cortex.failures = [ValueError("stand-in: unsupported language 'xx'")] * 3
    translator = CortexTranslate(sessions, max_chars=100, attempts=3, backoff_s=0.001)
    with pytest.raises(TranslationError, match="rejected the input.*unsupported language"):
        asyncio.run(translator.translate("hello.", "xx", "en"))
    assert len(cortex.ai_translate_calls) == 1


UNKNOWN_AI_TRANSLATE = "SQL compilation error:\nUnknown function AI_TRANSLATE"  # Snowflake's 002140 (42601)


def test_translate_uses_ai_translate_where_the_account_has_it(cortex: StandinCortex, sessions: LocalSessions) -> None:
    # AI_TRANSLATE is the current function; SNOWFLAKE.CORTEX.TRANSLATE is the legacy one:
    # https://docs.snowflake.com/en/sql-reference/functions/ai_translate
    translator = CortexTranslate(sessions, max_chars=3000, attempts=3, backoff_s=0)
    assert asyncio.run(translator.translate(HINDI_SENTENCE, "hi", "en")) == "hello world. my name Ram is."
    assert asyncio.run(translator.translate("राम", "hi", "en")) == "Ram"
    assert cortex.ai_translate_calls == [[(HINDI_SENTENCE, "hi", "en")], [("राम", "hi", "en")]]
    assert cortex.translate_calls == []
    assert translator.function == AI_TRANSLATE_FUNCTION and translator.method == "cortex.ai_translate"


@pytest.mark.parametrize("account", ["emulator", "snowflake"])
def test_falls_back_to_legacy_translate_once_where_ai_translate_is_unknown(
    cortex: StandinCortex, sessions: LocalSessions, caplog: pytest.LogCaptureFixture, account: str
) -> None:
    # An account without AI_TRANSLATE keeps the legacy SNOWFLAKE.CORTEX.TRANSLATE (same arguments):
    # https://docs.snowflake.com/en/sql-reference/functions/translate-snowflake-cortex
    if account == "emulator":  # "Function AI_TRANSLATE is not implemented"
        MockedFunctionRegistry.get_or_create().unregister("ai_translate")
    else:  # the stand-in answers as Snowflake does for a function it does not know
        cortex.failures = [ProgrammingError(msg=UNKNOWN_AI_TRANSLATE, errno=2140, sqlstate="42601")]
    translator = CortexTranslate(sessions, max_chars=3000, attempts=1, backoff_s=0)  # the fallback is no retry
    with caplog.at_level("INFO", logger="service.translate.cortex"):
        assert asyncio.run(translator.translate(HINDI_SENTENCE, "hi", "en")) == "hello world. my name Ram is."
    tried = len(cortex.ai_translate_calls)
    assert tried == (1 if account == "snowflake" else 0)
    assert translator.function == TRANSLATE_FUNCTION and translator.method == "cortex.translate"
    assert "AI_TRANSLATE is not available in this account" in caplog.text and TRANSLATE_FUNCTION in caplog.text

    assert asyncio.run(translator.translate("राम", "hi", "en")) == "Ram"  # decided once: AI_TRANSLATE not tried again
    assert len(cortex.ai_translate_calls) == tried
    assert cortex.translate_calls == [[(HINDI_SENTENCE, "hi", "en")], [("राम", "hi", "en")]]
    assert sessions.invalidated == 0


@pytest.mark.parametrize(
    ("function", "detected", "sent"),
    [
        # Whisper may say Urdu (`ur`) for Hindi speech, or Nepali (`ne`): neither is in AI_TRANSLATE's table
        # (https://docs.snowflake.com/en/sql-reference/functions/ai_translate), so the source goes as '' (detect it)
        (AI_TRANSLATE_FUNCTION, "ur", ""),
        (AI_TRANSLATE_FUNCTION, "ne", ""),
        (AI_TRANSLATE_FUNCTION, "hi", "hi"),
        (AI_TRANSLATE_FUNCTION, "ar", "ar"),
        (AI_TRANSLATE_FUNCTION, "pt-BR", "pt"),
        (AI_TRANSLATE_FUNCTION, None, ""),
        # the legacy function's shorter table
        # (https://docs.snowflake.com/en/sql-reference/functions/translate-snowflake-cortex)
        (TRANSLATE_FUNCTION, "ar", ""),
        (TRANSLATE_FUNCTION, "ur", ""),
        (TRANSLATE_FUNCTION, "hi", "hi"),
    ],
)
def test_a_source_language_the_function_does_not_take_goes_as_auto_detect(
    cortex: StandinCortex, sessions: LocalSessions, function: str, detected: str | None, sent: str
) -> None:
    translator = CortexTranslate(sessions, max_chars=3000, attempts=3, backoff_s=0, function=function)
    assert asyncio.run(translator.translate("राम", detected, "en")) == "Ram"
    calls = cortex.ai_translate_calls if function == AI_TRANSLATE_FUNCTION else cortex.translate_calls
    assert calls == [[("राम", sent, "en")]]


def test_a_target_the_function_cannot_translate_into_fails_at_once(
    cortex: StandinCortex, sessions: LocalSessions
) -> None:
    translator = CortexTranslate(sessions, max_chars=3000, attempts=3, backoff_s=0.001)
    with pytest.raises(TranslationError) as info:
        asyncio.run(translator.translate("hello.", "en", "ur"))
    assert info.value.code == "translation_failed" and not info.value.retryable
    assert "AI_TRANSLATE cannot translate into 'ur'" in info.value.message and "hi" in info.value.message
    assert "cortex-complete" in info.value.message
    assert cortex.ai_translate_calls == cortex.translate_calls == []  # no query spent on it


def test_a_target_only_ai_translate_takes_fails_once_the_account_turns_out_legacy(
    legacy_cortex: StandinCortex, sessions: LocalSessions
) -> None:
    translator = CortexTranslate(sessions, max_chars=3000, attempts=3, backoff_s=0.001)
    with pytest.raises(TranslationError) as info:
        asyncio.run(translator.translate("hello.", "en", "ar"))  # Arabic: AI_TRANSLATE yes, TRANSLATE no
    assert not info.value.retryable and "SNOWFLAKE.CORTEX.TRANSLATE cannot translate into 'ar'" in info.value.message
    assert legacy_cortex.translate_calls == [] and translator.method == "cortex.translate"


def test_make_translator_decides_the_function_at_once_on_the_emulator(
    cortex: StandinCortex, sessions: LocalSessions
) -> None:
    settings = Settings(store="snowflake", snowflake_local_testing=True)
    translator = make_translator(settings, sessions)
    assert isinstance(translator, CortexTranslate) and translator.function == AI_TRANSLATE_FUNCTION
    assert translator.method == "cortex.ai_translate"  # right for the first job already

    MockedFunctionRegistry.get_or_create().unregister("ai_translate")
    translator = make_translator(settings, sessions)
    assert isinstance(translator, CortexTranslate) and translator.function == TRANSLATE_FUNCTION
    assert translator.method == "cortex.translate"
    assert cortex.translate_calls == []  # deciding took no legacy call

    undecided = make_translator(Settings(store="snowflake"), mock.Mock())  # an account: nothing at construction
    assert isinstance(undecided, CortexTranslate) and undecided.function is None


def test_null_answers_from_ai_translate_are_retried_then_explained(
    cortex: StandinCortex, sessions: LocalSessions
) -> None:
    # "if AI_TRANSLATE can't process the input, the function returns NULL" (Error behavior,
    # https://docs.snowflake.com/en/sql-reference/functions/ai_translate)
    def standin_ai_translate_null(text: ColumnEmulator, *_: object) -> ColumnEmulator:
        """STAND-IN for AI_TRANSLATE (not Snowflake's) that cannot process anything: NULL for every row."""
        cortex.ai_translate_calls.append(list(text))
        return ColumnEmulator([None for _ in text])

    patch("ai_translate")(standin_ai_translate_null)
    translator = CortexTranslate(sessions, max_chars=3000, attempts=2, backoff_s=0.001)
    with pytest.raises(TranslationError) as info:
        asyncio.run(translator.translate("नमस्ते।", "hi", "en"))
    assert len(cortex.ai_translate_calls) == 2 and not info.value.retryable
    assert "AI_TRANSLATE answers NULL for a text it cannot process" in info.value.message
    assert translator.method == "cortex.ai_translate"  # the function exists: decided all the same


def test_a_model_outside_the_accounts_region_names_the_cross_region_setting(
    cortex: StandinCortex, sessions: LocalSessions
) -> None:
    # What COMPLETE answers for a model its region does not serve (cross-region inference:
    # https://docs.snowflake.com/en/user-guide/snowflake-cortex/cross-region-inference)
    answer = (
        "Request failed for external function COMPLETE$V6 with remote service error: 400 '\"The model you requested "
        "is unavailable in your region. To access it, enable cross region inference with AZURE_US, ANY_REGION.\"'"
    )
    cortex.failures = [ProgrammingError(msg=answer, errno=100351, sqlstate="P0000")] * 3
    translator = CortexComplete(sessions, "openai-gpt-4.1", "{text}", max_chars=100, attempts=3, backoff_s=0.001)
    with pytest.raises(TranslationError) as info:
        asyncio.run(translator.translate("hello.", "en", "de"))
    assert len(cortex.complete_calls) == 1 and not info.value.retryable  # retrying cannot help
    assert "ALTER ACCOUNT SET CORTEX_ENABLED_CROSS_REGION = 'ANY_REGION';" in info.value.message
    assert "unavailable in your region" in info.value.message


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
    assert "AI_TRANSLATE(\"TEXT\", '', 'en')" in query and "CORTEX" not in query
    assert hostile not in query and "'it''s''); DROP TABLE JOBS; --'" in query  # a quoted literal, nothing more
    assert query.rstrip().endswith('ORDER BY "I" ASC NULLS FIRST')
    (query,) = translate.frame(sql_session, ["x"], "ur", "en").queries["queries"]
    assert "AI_TRANSLATE(\"TEXT\", '', 'en')" in query  # a source the function does not take: detect it

    legacy = CortexTranslate(mock.Mock(), max_chars=100, attempts=1, backoff_s=0, function=TRANSLATE_FUNCTION)
    (query,) = legacy.frame(sql_session, [hostile], "hi", "en").queries["queries"]
    assert "SNOWFLAKE.CORTEX.TRANSLATE(\"TEXT\", 'hi', 'en')" in query

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
