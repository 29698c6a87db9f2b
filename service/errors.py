"""One error base for the whole service: a machine-readable `code`, the HTTP `status` it answers with, and
whether trying again later may help (`retryable`). API, audio, stage, inference and translation errors derive
from it, so the routes render them alike and the dispatcher decides retries from one attribute."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A failure with a stable `code` (the error body's), an HTTP `status`, and `retryable`: True when the
    same request may succeed later (an outage), False when it is the input's fault. By default a 4xx is not
    retryable except 404/408/409/429, and a 5xx is."""

    code: str = "internal_error"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retryable = default_retryable(self.status) if retryable is None else retryable
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


def default_retryable(status: int) -> bool:
    """Whether a request that failed with this HTTP status may succeed if tried again unchanged."""
    return status >= 500 or status in (408, 429)
