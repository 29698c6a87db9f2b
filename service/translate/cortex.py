"""Translation with Snowflake Cortex (TRANSLATE or COMPLETE) through Snowpark.

A text is split into pieces of at most `max_chars`; the pieces go to Snowflake as the rows of one DataFrame
(an index column keeps their order), one query per batch of rows. Values travel as DataFrame data, which
Snowpark escapes as string literals (or binds, for large frames), never as SQL text built here. Snowpark is
synchronous, so each query runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from service.languages import NAMES
from service.translate.base import TranslationError, Translator
from service.translate.text import split_text

if TYPE_CHECKING:
    from snowflake.snowpark import Column, DataFrame, Session

    from service.config import Settings

log = logging.getLogger(__name__)

TRANSLATE_FUNCTION = "SNOWFLAKE.CORTEX.TRANSLATE"
COMPLETE_FUNCTION = "SNOWFLAKE.CORTEX.COMPLETE"
UNKNOWN_SOURCE = "the source language"

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


class SessionSource(Protocol):
    """Hands out a Snowpark session; `invalidate` drops it so the next `get` opens a fresh one."""

    def get(self) -> Session: ...

    def invalidate(self) -> None: ...


class _CortexTranslator:
    """Splitting, batching into queries, retries with backoff; subclasses say which Cortex function to call."""

    method: str
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
            except Exception as exc:
                reason = _describe(exc)
                if _is_bad_input(exc):
                    message = f"{self.method} rejected the input: {reason}"
                    raise TranslationError("translation_failed", message, transient=False) from exc
                if _is_connection_error(exc):
                    self.sessions.invalidate()
                if attempt + 1 == self.attempts:
                    message = f"{self.method} failed {self.attempts} time(s), giving up; last error: {reason}"
                    raise TranslationError("translation_failed", message, transient=False) from exc
                delay = self.backoff_s * 2**attempt
                log.warning(
                    "%s try %d/%d failed, again in %.2fs: %s", self.method, attempt + 1, self.attempts, delay, reason
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _run(self, inputs: list[str], source_language: str | None, target_language: str) -> list[str]:
        """One query (blocking: runs in a worker thread)."""
        rows = self.frame(self.sessions.get(), inputs, source_language, target_language).collect()
        answers = [row[1] for row in rows]
        if len(answers) != len(inputs) or any(answer is None for answer in answers):
            raise RuntimeError(f"Cortex answered {len(answers)} row(s) for {len(inputs)} input(s), or NULL")
        return [str(answer).strip() for answer in answers]


class CortexTranslate(_CortexTranslator):
    """`SNOWFLAKE.CORTEX.TRANSLATE(text, source, target)` with language codes; source '' = detect it."""

    method = "cortex.translate"

    def _expression(self, text: Column, source_language: str | None, target_language: str) -> Column:
        from snowflake.snowpark.functions import call_function, lit

        source = (source_language or "").strip().lower()
        return call_function(TRANSLATE_FUNCTION, text, lit(source), lit(target_language.strip().lower()))


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
        self.method = f"cortex.complete:{model}"

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
    common = {
        "max_chars": settings.cortex_max_chars,
        "attempts": settings.translate_max_attempts,
        "backoff_s": settings.retry_backoff_s,
    }
    if method == "cortex-translate":
        return CortexTranslate(sessions, **common)
    if method == "cortex-complete":
        return CortexComplete(sessions, settings.cortex_model, settings.cortex_prompt, **common)
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
