"""Translation with Snowflake Cortex (AI_TRANSLATE, the legacy TRANSLATE, or COMPLETE) through Snowpark.

A text is split into pieces of at most `max_chars`; the pieces go to Snowflake as the rows of one DataFrame
(an index column keeps their order), one query per batch of rows. Values travel as DataFrame data, which
Snowpark escapes as string literals (or binds, for large frames), never as SQL text built here. Snowpark is
synchronous, so each query runs in a worker thread.

`cortex-translate` calls AI_TRANSLATE, the current function; an account without it (Snowflake answers
"Unknown function AI_TRANSLATE"; the emulator, "Function AI_TRANSLATE is not implemented") gets the legacy
SNOWFLAKE.CORTEX.TRANSLATE instead, decided once per process. Both take language codes from a fixed list:
a detected source language outside it goes as '' (auto-detect), a target outside it fails at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.languages import NAMES
from service.translate.base import TranslationError, Translator
from service.translate.text import split_text

if TYPE_CHECKING:
    from snowflake.snowpark import Column, DataFrame, Session

    from service.config import Settings
    from service.storage.snowflake_session import SessionSource

log = logging.getLogger(__name__)

AI_TRANSLATE_FUNCTION = "AI_TRANSLATE"
TRANSLATE_FUNCTION = "SNOWFLAKE.CORTEX.TRANSLATE"
COMPLETE_FUNCTION = "SNOWFLAKE.CORTEX.COMPLETE"
UNKNOWN_SOURCE = "the source language"
METHODS = {AI_TRANSLATE_FUNCTION: "cortex.ai_translate", TRANSLATE_FUNCTION: "cortex.translate"}  # TRANSLATIONS.METHOD

# The language codes each function takes, source and target alike; '' as the source means "detect it".
# SNOWFLAKE.CORTEX.TRANSLATE, "Usage notes" table (a legacy function, "deprecated by the end of 2026"):
#   https://docs.snowflake.com/en/sql-reference/functions/translate-snowflake-cortex
TRANSLATE_LANGUAGES = frozenset({"de", "en", "es", "fr", "hi", "it", "ja", "ko", "nl", "pl", "pt", "ru", "sv", "zh"})
# AI_TRANSLATE, "Usage notes" table: the same languages plus Arabic, Croatian, Czech, Finnish, Greek, Hebrew,
# Norwegian, Romanian and Turkish (their ISO 639-1 codes, which are also Whisper's):
#   https://docs.snowflake.com/en/sql-reference/functions/ai_translate
AI_TRANSLATE_LANGUAGES = TRANSLATE_LANGUAGES | {"ar", "cs", "el", "fi", "he", "hr", "no", "ro", "tr"}
LANGUAGES = {AI_TRANSLATE_FUNCTION: AI_TRANSLATE_LANGUAGES, TRANSLATE_FUNCTION: TRANSLATE_LANGUAGES}

# What an account without AI_TRANSLATE answers: Snowflake's "SQL compilation error: Unknown function
# AI_TRANSLATE", Snowpark local testing's "Function AI_TRANSLATE is not implemented".
_AI_TRANSLATE_MISSING = re.compile(
    r"unknown function\W+(?:\w+\.)*ai_translate\b|function\W+ai_translate\W+(?:is not implemented|does not exist)",
    re.IGNORECASE,
)
# COMPLETE with a model the account's region does not serve, e.g. "The model you requested is unavailable in your
# region. To access it, enable cross region inference with AZURE_US, ANY_REGION." (Cross-region inference:
# https://docs.snowflake.com/en/user-guide/snowflake-cortex/cross-region-inference)
_NEEDS_CROSS_REGION = re.compile(r"unavailable in your region|cross[- ]region inference", re.IGNORECASE)
CROSS_REGION_STATEMENT = "ALTER ACCOUNT SET CORTEX_ENABLED_CROSS_REGION = 'ANY_REGION';"

# Error text meaning the input or the configuration is wrong: trying again cannot help.
_BAD_INPUT = re.compile(
    r"unsupported (source |target )?language|language .*not supported|invalid (argument|language|value)"
    r"|unknown model|invalid model|model .*(not found|unavailable|does not exist)"
    r"|unknown function|does not exist or not authorized"
    r"|exceeds the (maximum|max|context)|context (length|window)|too many tokens|prompt is too long",
    re.IGNORECASE,
)
# Error text meaning the connection or session is gone: open a new one before the next try.
_CONNECTION = re.compile(
    r"connection|session (no longer exists|is closed|has been closed)|token (has )?expired|not connected"
    r"|390114|390112|authenticat",
    re.IGNORECASE,
)
_THROTTLED = re.compile(r"\b429\b|too many requests|rate limit|throttl|capacity", re.IGNORECASE)


class _CortexTranslator:
    """Splitting, batching into queries, retries with backoff; subclasses say which Cortex function to call."""

    max_query_rows = 255  # Snowpark sends frames of 512 cells or more through a temporary table: stay below
    max_query_bytes = 500_000  # Snowflake advises query text under 1 MB; the literals are most of it

    def __init__(self, sessions: SessionSource, max_chars: int, attempts: int, backoff_s: float) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.sessions = sessions
        self.max_chars = max_chars
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def translate(self, text: str, source_language: str | None, target_language: str) -> str:
        inputs = self.inputs(split_text(text, self.max_chars), source_language, target_language)
        results: list[str] = []
        for batch in _batches(inputs, self.max_query_rows, self.max_query_bytes):
            results += await self._with_retries(batch, source_language, target_language)
        return " ".join(results)

    @property
    def method(self) -> str:
        """Stored in TRANSLATIONS.METHOD (Translator.method)."""
        raise NotImplementedError

    def inputs(self, pieces: list[str], source_language: str | None, target_language: str) -> list[str]:
        """What Cortex gets for each piece of text."""
        return pieces

    def frame(
        self, session: Session, inputs: Sequence[str], source_language: str | None, target_language: str
    ) -> DataFrame:
        """The DataFrame (columns I, RESULT; sorted by I) whose rows are Cortex's answers to `inputs`."""
        from snowflake.snowpark.functions import col
        from snowflake.snowpark.types import LongType, StringType, StructField, StructType

        schema = StructType([StructField("I", LongType(), nullable=False), StructField("TEXT", StringType())])
        data = session.create_dataframe([[i, value] for i, value in enumerate(inputs)], schema=schema)
        result = self._expression(col("TEXT"), source_language, target_language).alias("RESULT")
        return data.select(col("I"), result).sort(col("I"))

    def _expression(self, text: Column, source_language: str | None, target_language: str) -> Column:
        raise NotImplementedError

    async def _with_retries(self, inputs: list[str], source_language: str | None, target_language: str) -> list[str]:
        for attempt in range(self.attempts):
            try:
                return await asyncio.to_thread(self._run, inputs, source_language, target_language)
            except TranslationError:
                raise  # already says what is wrong, and that trying again cannot help
            except Exception as exc:
                reason = _describe(exc)
                if _is_bad_input(exc):
                    message = f"{self.method} rejected the input: {reason}"
                    if any(_NEEDS_CROSS_REGION.search(str(e)) for e in _chain(exc)):
                        message += (
                            "; the model is not served in this account's region: an ACCOUNTADMIN can allow "
                            f"cross-region inference with {CROSS_REGION_STATEMENT}"
                        )
                    raise TranslationError("translation_failed", message, retryable=False) from exc
                if _is_connection_error(exc):
                    self.sessions.invalidate()
                if attempt + 1 == self.attempts:
                    message = f"{self.method} failed {self.attempts} time(s), giving up; last error: {reason}"
                    raise TranslationError("translation_failed", message, retryable=False) from exc
                delay = self.backoff_s * 2**attempt
                log.warning(
                    "%s try %d/%d failed, again in %.2fs: %s", self.method, attempt + 1, self.attempts, delay, reason
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _run(self, inputs: list[str], source_language: str | None, target_language: str) -> list[str]:
        """One query (blocking: runs in a worker thread)."""
        return self._answers(self._query(inputs, source_language, target_language), len(inputs))

    def _query(self, inputs: list[str], source_language: str | None, target_language: str) -> list[object]:
        rows = self.frame(self.sessions.get(), inputs, source_language, target_language).collect()
        return [row[1] for row in rows]

    def _answers(self, answers: list[object], expected: int) -> list[str]:
        if len(answers) != expected or any(answer is None for answer in answers):
            raise RuntimeError(f"Cortex answered {len(answers)} row(s) for {expected} input(s), or NULL")
        return [str(answer).strip() for answer in answers]


class CortexTranslate(_CortexTranslator):
    """`AI_TRANSLATE(text, source, target)`, or the legacy `SNOWFLAKE.CORTEX.TRANSLATE` (same arguments) in an
    account without it; `function` None = find out at the first query (or `resolve()`), once per process."""

    def __init__(
        self, sessions: SessionSource, max_chars: int, attempts: int, backoff_s: float, function: str | None = None
    ) -> None:
        super().__init__(sessions, max_chars, attempts, backoff_s)
        if function is not None and function not in LANGUAGES:
            raise ValueError(f"function must be {AI_TRANSLATE_FUNCTION} or {TRANSLATE_FUNCTION}, not {function!r}")
        self.function = function
        self._deciding = threading.Lock()

    @property
    def method(self) -> str:
        """`cortex.ai_translate`, or `cortex.translate` once the account turned out not to have AI_TRANSLATE."""
        return METHODS[self.function or AI_TRANSLATE_FUNCTION]

    def resolve(self) -> str:
        """The function this account has, deciding it now when not yet known (blocking: one one-row query).
        Raises what the query raised when it did not tell (e.g. Snowflake unreachable)."""
        if self.function is None:
            with self._deciding:
                if self.function is None:
                    self._try_ai_translate(["hello"], "en", "de")
        return self.function or AI_TRANSLATE_FUNCTION

    async def translate(self, text: str, source_language: str | None, target_language: str) -> str:
        target_code(target_language, self.function or AI_TRANSLATE_FUNCTION)  # before any query
        return await super().translate(text, source_language, target_language)

    def _expression(self, text: Column, source_language: str | None, target_language: str) -> Column:
        from snowflake.snowpark.functions import call_function, lit

        function = self.function or AI_TRANSLATE_FUNCTION
        source = source_code(source_language, function)
        return call_function(function, text, lit(source), lit(target_code(target_language, function)))

    def _run(self, inputs: list[str], source_language: str | None, target_language: str) -> list[str]:
        if self.function is None:
            with self._deciding:  # the first queries wait for the decision instead of each trying
                if self.function is None:
                    answers = self._try_ai_translate(inputs, source_language, target_language)
                    if answers is not None:
                        return self._answers(answers, len(inputs))
        return super()._run(inputs, source_language, target_language)

    def _try_ai_translate(
        self, inputs: list[str], source_language: str | None, target_language: str
    ) -> list[object] | None:
        """AI_TRANSLATE's answers, and the decision; None (and SNOWFLAKE.CORTEX.TRANSLATE from now on) when
        the account does not know AI_TRANSLATE. Any other failure decides nothing and is raised."""
        try:
            answers = self._query(inputs, source_language, target_language)
        except Exception as exc:
            if not any(_AI_TRANSLATE_MISSING.search(str(e)) for e in _chain(exc)):
                raise
            self._decide(TRANSLATE_FUNCTION, _describe(exc))
            return None
        self._decide(AI_TRANSLATE_FUNCTION, None)
        return answers

    def _answers(self, answers: list[object], expected: int) -> list[str]:
        try:
            return super()._answers(answers, expected)
        except RuntimeError as exc:
            # "if AI_TRANSLATE can't process the input, the function returns NULL" (its "Error behavior":
            # https://docs.snowflake.com/en/sql-reference/functions/ai_translate); tried again like any failure
            raise RuntimeError(
                f"{exc} ({self.function or AI_TRANSLATE_FUNCTION} answers NULL for a text it cannot process)"
            ) from None  # this message is the reason (_describe reports the root cause)

    def _decide(self, function: str, reason: str | None) -> None:
        self.function = function
        if reason is None:
            log.info("Cortex translations use %s (method %s)", function, self.method)
        else:
            log.warning(
                "AI_TRANSLATE is not available in this account (%s): Cortex translations use the legacy %s "
                "(method %s; %d languages)",
                reason,
                function,
                self.method,
                len(LANGUAGES[function]),
            )


class CortexComplete(_CortexTranslator):
    """`SNOWFLAKE.CORTEX.COMPLETE(model, prompt)`, the prompt a template with {text}, {source_language} and
    {target_language} (languages by name, e.g. "Hindi"; "the source language" when unknown)."""

    def __init__(
        self,
        sessions: SessionSource,
        model: str,
        prompt_template: str,
        max_chars: int,
        attempts: int,
        backoff_s: float,
    ) -> None:
        super().__init__(sessions, max_chars, attempts, backoff_s)
        self.model = model
        self.prompt_template = prompt_template

    @property
    def method(self) -> str:
        return f"cortex.complete:{self.model}"

    def prompt(self, text: str, source_language: str | None, target_language: str) -> str:
        """The template filled in one pass: braces in the text, or other braces in the template, stay as they are."""
        values = {
            "text": text,
            "source_language": _display_name(source_language) if source_language else UNKNOWN_SOURCE,
            "target_language": _display_name(target_language),
        }
        return re.sub(r"\{(text|source_language|target_language)\}", lambda m: values[m[1]], self.prompt_template)

    def inputs(self, pieces: list[str], source_language: str | None, target_language: str) -> list[str]:
        return [self.prompt(piece, source_language, target_language) for piece in pieces]

    def _expression(self, text: Column, source_language: str | None, target_language: str) -> Column:
        from snowflake.snowpark.functions import call_function, lit

        return call_function(COMPLETE_FUNCTION, lit(self.model), text)


def make_translator(settings: Settings, sessions: SessionSource) -> Translator | None:
    """The Cortex translator the settings ask for; None when Whisper translates instead."""
    method = settings.effective_translate_method
    max_chars, attempts = settings.snowflake.cortex_max_chars, settings.snowflake.translate_max_attempts
    backoff_s = settings.gateway.retry_backoff_s
    if method == "cortex-translate":
        translator = CortexTranslate(sessions, max_chars, attempts, backoff_s)
        if settings.snowflake.snowflake_local_testing:
            # The emulator answers in-process: decide now, so that METHOD is right from the first job. On an
            # account the start waits for nothing: check_cortex() at start, or the first translation, decides.
            try:
                translator.resolve()
            except Exception as exc:
                log.warning("could not tell whether the emulator has AI_TRANSLATE: %s", _describe(exc))
        return translator
    if method == "cortex-complete":
        snowflake = settings.snowflake
        return CortexComplete(sessions, snowflake.cortex_model, snowflake.cortex_prompt, max_chars, attempts, backoff_s)
    return None


def _batches(inputs: list[str], max_rows: int, max_bytes: int) -> list[list[str]]:
    """Consecutive runs of `inputs`, each at most `max_rows` long and (unless one value is larger) `max_bytes`."""
    batches: list[list[str]] = []
    size = 0
    for value in inputs:
        length = len(value.encode())
        if not batches or len(batches[-1]) >= max_rows or size + length > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(value)
        size += length
    return batches


def _normalize(code: str) -> str:
    """`pt-BR` / `pt_br` -> `pt`: the functions take bare ISO 639-1 codes."""
    return code.strip().lower().replace("_", "-").split("-")[0]


def source_code(language: str | None, function: str = AI_TRANSLATE_FUNCTION) -> str:
    """The source argument for `function`: the code when the function knows it, else '' (detect it) rather
    than a code it rejects, e.g. `ur` (Whisper may say Urdu for Hindi speech) or `ne`."""
    code = _normalize(language or "")
    if code and code not in LANGUAGES[function]:
        log.debug("%s does not take source language %r: sending '' (auto-detect)", function, code)
        return ""
    return code


def target_code(language: str, function: str = AI_TRANSLATE_FUNCTION) -> str:
    """The target argument for `function`; a language it cannot translate into is a non-retryable error."""
    code = _normalize(language)
    if code not in LANGUAGES[function]:
        supported = ", ".join(sorted(LANGUAGES[function]))
        message = (
            f"{function} cannot translate into {language!r}; it supports {supported} "
            "(SPCS_WHISPER_TRANSLATE_METHOD=cortex-complete can translate into others)"
        )
        raise TranslationError("translation_failed", message, retryable=False)
    return code


def _display_name(code: str) -> str:
    """`hi` -> `Hindi`; anything else is kept as given."""
    name = NAMES.get(code.strip().lower())
    return name.title() if name else code


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and a Snowpark error's original connector error."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is not None and all(current is not s for s in seen):
            seen.append(current)
            todo += [current.__cause__, current.__context__, getattr(current, "conn_error", None)]
    return seen


def _describe(exc: BaseException) -> str:
    """A short reason without the SQL (which holds the transcript): the root cause, and what wrapped it."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = f"{type(root).__name__}: {getattr(root, 'raw_message', None) or root}"
    if root is not exc:
        text += f" (raised as {type(exc).__name__})"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:400] + "…"


def _is_connection_error(exc: BaseException) -> bool:
    from snowflake.connector import errors
    from snowflake.snowpark.exceptions import SnowparkSessionException

    kinds = (ConnectionError, TimeoutError, errors.OperationalError, errors.InterfaceError, SnowparkSessionException)
    return any(isinstance(e, kinds) or _CONNECTION.search(str(e)) for e in _chain(exc))


def _is_bad_input(exc: BaseException) -> bool:
    """Clearly the input's or the configuration's fault (never throttling or a lost connection)."""
    chain = _chain(exc)
    if any(_THROTTLED.search(str(e)) for e in chain) or _is_connection_error(exc):
        return False
    return any(_BAD_INPUT.search(str(e)) for e in chain)
