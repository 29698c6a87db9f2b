"""The one error type for audio sources (uploads' stages and URLs): the API answers with its status."""

from __future__ import annotations


class SourceError(Exception):
    """A source that is malformed or forbidden (422), names nothing (404) or is too large (413)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
