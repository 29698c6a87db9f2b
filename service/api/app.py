"""The gateway: `create_app()` builds the FastAPI app; its lifespan opens the store and the dispatcher."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.api import (
    openai_models,
    routes_batches,
    routes_functions,
    routes_health,
    routes_jobs,
    routes_openai,
    routes_web,
)
from service.api.deps import Services
from service.api.errors import RequestContext, install_error_handlers
from service.api.function_batches import FunctionBatches
from service.api.openai_retries import Attachments
from service.api.uploads import intake_pool
from service.config import Settings, get_settings
from service.inference.client import Inference, InferenceClient
from service.jobs.dispatcher import Dispatcher
from service.metrics import Metrics
from service.storage.base import JobStore
from service.storage.sqlite import SQLiteStore
from service.storage.stages import StageReader
from service.translate.base import Translator
from service.translate.cortex_account import check_cortex_at_start

if TYPE_CHECKING:
    from service.storage.snowflake_session import SessionSource

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries on top of the file itself


@dataclass
class Backends:
    """What the gateway talks to: the job store, the stage reader, the Ray app (`inference`), the Cortex
    translator (None: Whisper translates) and the Snowflake session provider they share (None: no Snowflake).
    Built from the settings by `build_backends`, or passed to `create_app` (tests: a fake inference); the app's
    lifespan opens the store and closes the store and the inference client."""

    store: JobStore
    stages: StageReader
    inference: Inference
    translator: Translator | None = None
    sessions: SessionSource | None = None


def build_backends(settings: Settings, sessions: SessionSource | None = None) -> Backends:
    """The backends the settings ask for. Snowpark is imported only when Snowflake is used; `sessions` (a
    SessionProvider) may be passed in, e.g. a local-testing one."""
    needs_snowflake = settings.gateway.store == "snowflake" or settings.effective_translate_method != "whisper"
    if needs_snowflake and sessions is None:
        from service.storage.snowflake_session import SessionProvider

        sessions = SessionProvider(settings)
    translator = None
    if settings.effective_translate_method != "whisper":
        from service.translate.cortex import make_translator

        assert sessions is not None  # needs_snowflake
        translator = make_translator(settings, sessions)
    if settings.gateway.store == "snowflake":
        from service.storage.snowflake import SnowflakeStore

        assert sessions is not None  # needs_snowflake
        store: JobStore = SnowflakeStore(settings, sessions)
    else:
        store = SQLiteStore(settings.gateway.data_dir)
    db, schema = settings.snowflake.snowflake_database, settings.snowflake.snowflake_schema
    home = f"{db}.{schema}" if db and schema else None
    stages = StageReader(settings.gateway.stage_mounts, sessions, temp_dir=settings.gateway.data_dir, home=home)
    inference = InferenceClient(settings.effective_serve_url, settings.gateway.request_timeout_s)
    return Backends(store, stages, inference, translator, sessions)


def create_app(settings: Settings | None = None, backends: Backends | None = None) -> FastAPI:
    """The gateway's app. Its lifespan builds the backends (unless given), opens the store, starts the
    dispatcher and the intake pool, and publishes them as `Services` for the routes' dependencies (deps.py)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = backends or build_backends(settings)
        # Cortex's own account settings (AI_TRANSLATE or legacy TRANSLATE, cross-region inference for the
        # COMPLETE model), checked in the background: a problem is logged with the statement that fixes it.
        cortex_check = asyncio.create_task(check_cortex_at_start(settings, parts.sessions, parts.translator))
        await parts.store.open()
        dispatcher = Dispatcher(parts.store, parts.inference, settings, metrics, parts.stages, parts.translator)
        function_batches = FunctionBatches(settings.gateway.data_dir / "function-batches")
        function_batches.sweep()
        pool = intake_pool()
        services = Services(
            settings=settings,
            metrics=metrics,
            store=parts.store,
            stages=parts.stages,
            inference=parts.inference,
            translator=parts.translator,
            dispatcher=dispatcher,
            function_batches=function_batches,
            # OpenAI-compatible requests waiting on jobs: a job whose client went away is cancelled after a grace
            attachments=Attachments(parts.store, dispatcher, settings.gateway.openai_disconnect_grace_s),
            intake=pool,
        )
        app.state.services = services
        await dispatcher.start()
        log.info(
            "gateway up; Ray Serve app at %s; %s store; translation by %s",
            settings.effective_serve_url,
            settings.gateway.store,
            settings.effective_translate_method,
        )
        try:
            yield
        finally:
            app.state.services = None
            await services.attachments.close()
            await dispatcher.stop(drain_s=settings.gateway.drain_timeout_s)
            cortex_check.cancel()
            await asyncio.gather(cortex_check, return_exceptions=True)
            await parts.inference.close()
            await parts.store.close()
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="spcs-whisper",
        version="0.1.0",
        description="Whisper transcription jobs: upload audio or video, read transcripts as JSON, text, SRT or VTT.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics = settings, metrics
    install_error_handlers(app)
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.inference.max_upload_bytes + MULTIPART_OVERHEAD,
        upload_limit_mb=settings.inference.max_upload_mb,
        metrics=metrics,
        api_token=settings.gateway.api_token.get_secret_value() if settings.gateway.api_token else None,
        functions_port=settings.gateway.functions_port,
        read_timeout_s=settings.gateway.request_read_timeout_s,
        max_header_bytes=settings.gateway.max_header_kb * 1024,
    )
    app.include_router(routes_health.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_openai.router)
    app.include_router(openai_models.router)
    app.include_router(routes_batches.router)
    app.include_router(routes_functions.router)
    app.include_router(routes_web.router)
    return app


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, whose keep-alive timer also covers a connection's wait for a request head.

    uvicorn (0.54) arms that timer only once a response is complete, and cancels it on the next byte received:
    a connection that sends nothing, or half a request head and then nothing (slowloris), would stay open for
    ever. Here the timer is armed as the connection opens and runs until a whole request head has arrived (h11_impl
    cancels it on the Request event), so an idle connection or a half-sent head is closed after `keep_alive_s`.
    The head's size is bounded by h11's incomplete-event limit (`max_header_kb`, else 400), a body that stalls by
    RequestContext (`request_read_timeout_s`, 408): uvicorn itself has no timeout for either."""

    # The transport narrowed to asyncio.Transport as uvicorn's own H11Protocol.connection_made does (and ignores).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)  # the timer keeps running until handle_events has a whole request head
        self.handle_events()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket as uvicorn binds one (uvicorn.Config.bind_socket)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def gateway_server(
    settings: Settings, app: FastAPI | None = None, log_level: str = "info"
) -> tuple[uvicorn.Server, list[socket.socket]]:
    """One uvicorn server (one app, one lifespan: one store, one dispatcher) and its two listening sockets: the
    public port (`port`) and the service functions' port (`functions_port`). RequestContext tells the doors apart
    by the local port of each connection. Run it with `server.run(sockets=sockets)`."""
    if settings.gateway.functions_port == settings.gateway.port:
        raise ValueError("SPCS_WHISPER_FUNCTIONS_PORT must differ from SPCS_WHISPER_PORT (two doors, two ports)")
    config = uvicorn.Config(
        app if app is not None else create_app(settings),
        log_level=log_level,
        http=BoundedH11Protocol,
        h11_max_incomplete_event_size=settings.gateway.max_header_kb * 1024,
        # Longer than a proxy's usual idle timeout (load balancers), so a client rarely reuses a keep-alive
        # connection the gateway has just closed (a reset under load); also bounds a request head's arrival.
        # uvicorn annotates it int, but uses it as seconds for loop.call_later: a float works.
        timeout_keep_alive=settings.gateway.keep_alive_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=30,
    )
    public = _listen(settings.gateway.host, settings.gateway.port)
    try:
        functions = _listen(settings.gateway.host, settings.gateway.functions_port)
    except OSError:
        public.close()
        raise
    return uvicorn.Server(config), [public, functions]
