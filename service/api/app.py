"""The gateway: `create_app()` builds the FastAPI app; its lifespan opens the store and the dispatcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import routes_batches, routes_functions, routes_health, routes_jobs, routes_openai, routes_web
from service.api.errors import RequestContext, install_error_handlers
from service.api.function_batches import FunctionBatches
from service.config import Settings, get_settings
from service.inference.client import InferenceClient
from service.jobs.dispatcher import Dispatcher
from service.metrics import Metrics
from service.storage.base import JobStore
from service.storage.sqlite import SQLiteStore
from service.storage.stages import StageReader
from service.translate.base import Translator
from service.translate.cortex_account import check_cortex_at_start

log = logging.getLogger("spcs_whisper.gateway")
MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries on top of the file itself


def build_backends(
    settings: Settings, sessions: object | None = None
) -> tuple[JobStore, StageReader, Translator | None, object | None]:
    """The store, the stage reader, the Cortex translator the settings ask for, and the session provider they
    share. Snowpark is imported only when Snowflake is used; `sessions` (a SessionProvider) may be passed in,
    e.g. a local-testing one."""
    needs_snowflake = settings.store == "snowflake" or settings.effective_translate_method != "whisper"
    if needs_snowflake and sessions is None:
        from service.storage.snowflake_session import SessionProvider

        sessions = SessionProvider(settings)
    translator = None
    if settings.effective_translate_method != "whisper":
        from service.translate.cortex import make_translator

        translator = make_translator(settings, sessions)
    if settings.store == "snowflake":
        from service.storage.snowflake import SnowflakeStore

        store: JobStore = SnowflakeStore(settings, sessions)  # type: ignore[arg-type]
    else:
        store = SQLiteStore(settings.data_dir)
    stages = StageReader(settings.stage_mounts, sessions, temp_dir=settings.data_dir)  # type: ignore[arg-type]
    return store, stages, translator, sessions


def create_app(settings: Settings | None = None, sessions: object | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store, stages, translator, provider = build_backends(settings, sessions)
        # Cortex's own account settings (AI_TRANSLATE or legacy TRANSLATE, cross-region inference for the
        # COMPLETE model), checked in the background: a problem is logged with the statement that fixes it.
        app.state.cortex_check = asyncio.create_task(check_cortex_at_start(settings, provider, translator))  # type: ignore[arg-type]
        await store.open()
        client = InferenceClient(settings.effective_serve_url, settings.request_timeout_s)
        dispatcher = Dispatcher(store, client, settings, metrics, stages, translator)
        app.state.settings, app.state.store, app.state.dispatcher = settings, store, dispatcher
        app.state.stages = stages
        app.state.function_batches = FunctionBatches(settings.data_dir / "function-batches")
        app.state.function_batches.sweep()
        await dispatcher.start()
        log.info(
            "gateway up; Ray Serve app at %s; %s store; translation by %s",
            settings.effective_serve_url,
            settings.store,
            settings.effective_translate_method,
        )
        try:
            yield
        finally:
            await dispatcher.stop(drain_s=settings.drain_timeout_s)
            await client.close()
            await store.close()

    metrics = Metrics()

    app = FastAPI(
        title="spcs-whisper",
        version="0.1.0",
        description="Whisper transcription jobs: upload audio or video, read transcripts as JSON, text, SRT or VTT.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        upload_limit_mb=settings.max_upload_mb,
        metrics=metrics,
        api_token=settings.api_token.get_secret_value() if settings.api_token else None,
    )
    app.include_router(routes_health.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_batches.router)
    app.include_router(routes_functions.router)
    app.include_router(routes_web.router)
    return app
