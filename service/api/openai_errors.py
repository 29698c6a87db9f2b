"""OpenAI's error envelope for the OpenAI-compatible routes (`/v1/audio/*`, `/v1/models*`).

A leaf module (errors.py and keepalive.py use it). OpenAI answers `{"error": {"message", "type", "param",
"code"}}` and the official client picks its exception class by the HTTP status alone: `BadRequestError` (400)
for a bad file or a bad parameter, `AuthenticationError` (401), `NotFoundError` (404), `RateLimitError` (429),
`InternalServerError` (5xx). So input problems that the service's own routes answer with 413, 415, 422 or 431
are 400 here, with the service's `code` (e.g. `corrupt_audio`) and details (request_id, job_id) kept beside
OpenAI's fields. The client retries 408, 409, 429 and 5xx unless told otherwise: `x-should-retry: false` marks
the answers a retry cannot change.
"""

from __future__ import annotations

from typing import Any

PREFIXES = ("/v1/audio/", "/v1/models")
AS_BAD_REQUEST = frozenset({413, 415, 422, 431})  # input problems: OpenAI says 400
TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
RETRYABLE = frozenset({408, 409, 429})
NO_RETRY_CODES = frozenset({"job_cancelled"})  # a 409 that a retry would only repeat (or turn into a new job)
# The form field an error is about, by the service's code (validation errors name theirs in `fields`).
PARAMS = {
    "unsupported_model": "model",
    "unsupported_language": "language",
    "missing_file": "file",
    "file_too_large": "file",
    "empty_file": "file",
    "unsupported_media": "file",
    "no_audio_track": "file",
    "corrupt_audio": "file",
    "audio_too_long": "file",
    "bad_audio": "file",
    "model_not_found": "model",
}


def is_openai_path(path: str) -> bool:
    return path.startswith(PREFIXES) or path == "/v1/models"


def openai_status(status: int) -> int:
    """The status OpenAI would answer for one of the service's."""
    return 400 if status in AS_BAD_REQUEST else status


def error_type(status: int) -> str:
    if 400 <= status < 500:
        return TYPES.get(status, "invalid_request_error")
    return "server_error"


def _param(code: str, details: dict[str, Any]) -> str | None:
    fields = details.get("fields")
    if isinstance(fields, list) and fields and isinstance(fields[0], dict) and fields[0].get("field"):
        return str(fields[0]["field"])
    return details.pop("param", None) or PARAMS.get(code)


def envelope(status: int, code: str, message: str, **details: Any) -> tuple[int, dict[str, Any]]:
    """(the OpenAI status, `{"error": {...}}`) for one of the service's errors; `details` ride along."""
    status = openai_status(status)
    param = _param(code, details)
    error = {"message": message, "type": error_type(status), "param": param, "code": code, **details}
    return status, {"error": error}


def should_retry(status: int, code: str) -> bool | None:
    """False where a retry cannot help (the client then gives up at once); None: the client decides."""
    if code in NO_RETRY_CODES:
        return False
    if 400 <= status < 500 and status not in RETRYABLE:
        return False
    return None


def headers_for(status: int, code: str) -> dict[str, str]:
    return {"x-should-retry": "false"} if should_retry(status, code) is False else {}
