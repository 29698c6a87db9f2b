"""One error body everywhere: `{"error": {"code", "message", "request_id"}}`."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.audio import AudioError
from service.metrics import Metrics
from service.storage.base import StoreUnavailable
from service.storage.sources import SourceError

log = logging.getLogger("spcs_whisper.api")
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "file_too_large",
    415: "unsupported_media",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_var.get()}
    body.update(details)
    headers = {}  # x-request-id is added by RequestContext to every response
    if status in (429, 503) or "retry_after" in details:
        headers["retry-after"] = str(details.get("retry_after", 5))
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, **exc.details)


async def _audio_error(_: Request, exc: AudioError | SourceError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body", "problem": e.get("msg", "")}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return error_response(422, "validation_error", f"invalid request: {summary}", fields=problems)


async def _model_error(_: Request, exc: ValidationError) -> JSONResponse:
    """A safety net: a pydantic model built from request data that was not validated first."""
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return error_response(422, "validation_error", f"invalid request: {summary}")


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "error"), str(exc.detail))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "internal error; the request id identifies it in the logs")


async def _store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
    log.warning("store unavailable: %s", exc)
    return error_response(503, "store_unavailable", "the job store does not answer; retry shortly", retry_after=5)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(AudioError, _audio_error)
    app.add_exception_handler(SourceError, _audio_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _model_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`; an HTTPException so that FastAPI's body parsing lets it through."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})  # probes and the web page need no token (its fetches do)
# Snowflake calls service functions without our token; SPCS itself authenticates those calls (only roles
# granted the endpoint's service role reach them), so the token guards the HTTP API only.
OPEN_PREFIXES = ("/functions/", "/web/")


class RequestContext:
    """ASGI middleware: request ids, the API token, metrics, and a body size limit enforced while the body
    streams in."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        metrics: Metrics,
        api_token: str | None = None,
        upload_limit_mb: float | None = None,
    ) -> None:
        """`max_body_bytes` is the file limit plus room for form fields; `upload_limit_mb` is what users are told."""
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics
        self.limit_mb = upload_limit_mb if upload_limit_mb is not None else max_body_bytes / 1024 / 1024
        self.expected = f"Bearer {api_token}".encode() if api_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        request_id_var.set(rid)
        limit = self.max_body_bytes
        too_large = f"the upload exceeds the limit of {self.limit_mb:g} MB"
        received = 0
        started = False
        status = 500
        begun = time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        path = scope["path"]
        if self.expected is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            # `X-Api-Key: <token>` too: behind SPCS's public endpoint, `Authorization` carries Snowflake's own
            # token (`Snowflake Token="..."`), so the API token needs a header of its own there.
            bearer = hmac.compare_digest(headers.get(b"authorization", b""), self.expected)
            keyed = hmac.compare_digest(b"Bearer " + headers.get(b"x-api-key", b""), self.expected)
            if not (bearer or keyed):
                response = error_response(
                    401, "unauthorized", "send the API token as `Authorization: Bearer <token>` or `X-Api-Key: <token>`"
                )
                response.headers["www-authenticate"] = "Bearer"
                await response(scope, receive, tracked_send)
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(413, "file_too_large", too_large)(scope, receive, tracked_send)
            return
        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await error_response(413, "file_too_large", too_large)(scope, receive, tracked_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request_seconds.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - begun
            )
