"""What every translator offers, and the one error it raises."""

from __future__ import annotations

from typing import Protocol

from service.errors import ServiceError


class TranslationError(ServiceError):
    """A translation that did not happen; `retryable` says whether trying the job again later may help."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, code=code, retryable=retryable)

    def __repr__(self) -> str:
        return f"TranslationError(code={self.code!r}, message={self.message!r}, retryable={self.retryable})"


class Translator(Protocol):
    """Turns a transcript into another language."""

    @property
    def method(self) -> str:
        """Stored in TRANSLATIONS.METHOD, e.g. `cortex.translate` or `cortex.complete:<model>`."""
        ...

    async def translate(self, text: str, source_language: str | None, target_language: str) -> str:
        """`text` in `target_language`; `source_language` None means detect it. Raises TranslationError."""
        ...
