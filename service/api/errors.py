"""One error body everywhere: `{"error": {"code", "message", "request_id"}}`; on the OpenAI-compatible routes
(`/v1/audio/*`, `/v1/models*`) OpenAI's envelope and statuses instead (openai_errors.py)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import openai_errors
from service.api.callers import DOOR, FUNCTIONS_DOOR, PUBLIC_DOOR, ROLE_HEADER, USER_HEADER
from service.audio import AudioError
from service.errors import ServiceError
from service.logs import request_id_var
from service.metrics import Metrics
from service.storage.base import StoreUnavailable
from service.storage.sources import SourceError

log = logging.getLogger(__name__)
openai_route_var: ContextVar[bool] = ContextVar("openai_route", default=False)  # errors in OpenAI's envelope

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "file_too_large",
    415: "unsupported_media",
    422: "validation_error",
    429: "too_many_requests",
    431: "headers_too_large",
    503: "unavailable",
}


class ApiError(ServiceError):
    """An error answered as is: `ApiError(status, code, message, **details)`; `details` join the error body."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message, code=code, status=status, **details)


def error_response(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    headers = {}  # x-request-id is added by RequestContext to every response
    if status in (429, 503) or "retry_after" in details:
        headers["retry-after"] = str(details.get("retry_after", 5))
    if openai_route_var.get():
        extra = {"request_id": request_id_var.get(), **details}
        sent, envelope = openai_errors.envelope(status, code, message, **extra)
        headers.update(openai_errors.headers_for(sent, code))
        return JSONResponse(envelope, status_code=sent, headers=headers)
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_var.get()}
    body.update(details)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, **exc.details)


async def _audio_error(_: Request, exc: AudioError | SourceError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message)


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    """Any other ServiceError (inference, translation, ...): its status and code; its message is for callers."""
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


E = TypeVar("E", bound=Exception)


def _on(app: FastAPI, kind: type[E], handler: Callable[[Request, E], Awaitable[Response]]) -> None:
    """Register `handler` for `kind`: Starlette types every handler as taking `Exception`, though it only ever
    passes instances of the class the handler was registered for."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, kind)
        return await handler(request, exc)

    app.add_exception_handler(kind, handle)


def install_error_handlers(app: FastAPI) -> None:
    _on(app, StoreUnavailable, _store_unavailable)
    _on(app, ApiError, _api_error)
    _on(app, ServiceError, _service_error)
    _on(app, AudioError, _audio_error)
    _on(app, SourceError, _audio_error)
    _on(app, RequestValidationError, _validation_error)
    _on(app, ValidationError, _model_error)
    _on(app, StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`; an HTTPException so that FastAPI's body parsing lets it through."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyStalled(HTTPException):
    """Raised from inside `receive` when the request body sends nothing for `request_read_timeout_s`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body sent nothing for {seconds:g} s")


# The public port: probes and the web page (and its two files) need no token; the page's own requests send it.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/web/app.js", "/web/style.css"})
FUNCTIONS_PREFIX = "/functions/"  # the functions port answers these paths only, the public port never
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
USER, ROLE = USER_HEADER.encode(), ROLE_HEADER.encode()
MAX_USER_BYTES = 256  # Snowflake identifiers have at most 255 characters


def _door(scope: Scope, functions_port: int | None) -> str:
    """Which door a request came in by: the local port its connection reached (uvicorn sets `server` from the
    listening socket), never anything the client sends."""
    server = scope.get("server")
    port = server[1] if server and len(server) > 1 else None
    return FUNCTIONS_DOOR if functions_port is not None and port == functions_port else PUBLIC_DOOR


class RequestContext:
    """ASGI middleware: request ids, the two doors, the API token, the caller headers, metrics, and a body
    size limit and read timeout enforced while the body streams in.

    Two doors: the gateway listens on `port` (SPCS's public endpoint) and `functions_port` (a non-public
    endpoint, which only Snowflake's service functions and services of the same owner reach:
    https://docs.snowflake.com/en/developer-guide/snowpark-container-services/specification-reference,
    https://docs.snowflake.com/en/developer-guide/snowpark-container-services/service-network-communications).
    `/functions/*` answer on the functions port only, everything else on the public port only. The public port
    needs the API token but for OPEN_PATHS; the functions port needs no token (Snowflake sends none; SPCS lets
    only roles granted the endpoint's service role call the functions) but every request must name its user
    (CONTEXT_HEADERS), and only there is the role header believed (callers.py). A user or role header sent
    twice is refused (400), never believed: which one would a proxy, Starlette or we have picked?"""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        metrics: Metrics,
        api_token: str | None = None,
        upload_limit_mb: float | None = None,
        functions_port: int | None = None,
        read_timeout_s: float | None = None,
        max_header_bytes: int | None = None,
    ) -> None:
        """`max_body_bytes` is the file limit plus room for form fields; `upload_limit_mb` is what users are told.
        `functions_port` None: one door (tests of the public routes only)."""
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics
        self.limit_mb = upload_limit_mb if upload_limit_mb is not None else max_body_bytes / 1024 / 1024
        self.expected = f"Bearer {api_token}".encode() if api_token else None
        self.functions_port, self.read_timeout_s = functions_port, read_timeout_s
        self.max_header_bytes = max_header_bytes  # h11 bounds a head still arriving; this one that has arrived

    def _refusal(self, scope: Scope) -> Any:
        """The response that refuses the request before the app sees it, or None."""
        door, path, raw = scope[DOOR], scope["path"], scope["headers"]
        if (door == FUNCTIONS_DOOR) != path.startswith(FUNCTIONS_PREFIX):
            return error_response(404, "not_found", "no such route on this port")
        if self.max_header_bytes is not None and sum(len(n) + len(v) + 4 for n, v in raw) > self.max_header_bytes:
            return error_response(431, "headers_too_large", f"the request's headers pass {self.max_header_bytes} bytes")
        users = [value for name, value in raw if name == USER]
        roles = [value for name, value in raw if name == ROLE] if door == FUNCTIONS_DOOR else []
        if len(users) > 1 or len(roles) > 1:
            return error_response(400, "ambiguous_caller", "the Sf-Context-Current-* headers may appear once each")
        if users and len(users[0].strip()) > MAX_USER_BYTES:
            return error_response(400, "invalid_caller", "Sf-Context-Current-User is longer than a Snowflake name")
        if door == FUNCTIONS_DOOR:
            if not (users and users[0].strip()):
                return error_response(
                    400,
                    "missing_user",
                    "service functions are declared with CONTEXT_HEADERS = (CURRENT_USER, CURRENT_ROLE); "
                    "this request names no user (Sf-Context-Current-User)",
                )
            return None
        if any(name == ROLE for name, _ in raw):  # the public port never believes a role: SPCS ingress sends
            scope["headers"] = [(name, value) for name, value in raw if name != ROLE]  # none, so a client did
        if self.expected is not None and path not in OPEN_PATHS:
            # `X-Api-Key: <token>` too: behind SPCS's public endpoint, `Authorization` carries Snowflake's own
            # token (`Snowflake Token="..."`), so the API token needs a header of its own there.
            headers = dict(raw)
            bearer = hmac.compare_digest(headers.get(b"authorization", b""), self.expected)
            keyed = hmac.compare_digest(b"Bearer " + headers.get(b"x-api-key", b""), self.expected)
            if not (bearer or keyed):
                response = error_response(
                    401, "unauthorized", "send the API token as `Authorization: Bearer <token>` or `X-Api-Key: <token>`"
                )
                response.headers["www-authenticate"] = "Bearer"
                return response
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        request_id_var.set(rid)
        openai_route_var.set(openai_errors.is_openai_path(scope["path"]))
        scope[DOOR] = _door(scope, self.functions_port)
        limit, read_timeout = self.max_body_bytes, self.read_timeout_s
        too_large = f"the upload exceeds the limit of {self.limit_mb:g} MB"
        received = 0
        body_done = stalled = started = False
        status = 500
        begun = time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received, body_done, stalled
            if body_done or read_timeout is None:  # after the body: a wait for the disconnect, however long
                message = await receive()
            else:
                try:
                    async with asyncio.timeout(read_timeout):
                        message = await receive()
                except TimeoutError:
                    stalled = True
                    raise BodyStalled(read_timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large)
                body_done = body_done or not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                extra = message.setdefault("headers", [])
                extra.append((b"x-request-id", rid.encode("latin-1")))
                if stalled:  # the rest of a stalled body will not be read: this connection cannot be reused
                    extra.append((b"connection", b"close"))
            await send(message)

        try:
            if (refusal := self._refusal(scope)) is not None:
                await refusal(scope, receive, tracked_send)
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
            except BodyStalled as exc:
                if not started:
                    await error_response(408, "request_timeout", exc.detail)(scope, receive, tracked_send)
        finally:
            # Bounded labels: a standard method or OTHER, and the route's template (never the raw path).
            method = scope["method"] if scope["method"] in STANDARD_METHODS else "OTHER"
            route = getattr(scope.get("route"), "path", None)
            route = route if isinstance(route, str) and route.startswith("/") else "unmatched"
            self.metrics.request_seconds.labels(method, route, str(status)).observe(time.perf_counter() - begun)
