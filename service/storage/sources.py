"""The one error type for audio sources (uploads' stages and URLs): the API answers with its status."""

from __future__ import annotations

from service.errors import ServiceError


class SourceError(ServiceError):
    """A source that is malformed or forbidden (422), names nothing (404) or is too large (413); a 5xx (the stage
    cannot be read now) is retryable."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code, status=status)
