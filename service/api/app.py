"""The gateway: `create_app()` builds the FastAPI app; its lifespan opens the store and the dispatcher."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import routes_health, routes_jobs, routes_openai
from service.api.errors import RequestContext, install_error_handlers
from service.config import Settings, get_settings
from service.inference.client import InferenceClient
from service.jobs.dispatcher import Dispatcher
from service.metrics import Metrics
from service.storage.sqlite import SQLiteStore

log = logging.getLogger("spcs_whisper.gateway")
MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries on top of the file itself


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = SQLiteStore(settings.data_dir)
        await store.open()
        client = InferenceClient(settings.effective_serve_url, settings.request_timeout_s)
        dispatcher = Dispatcher(store, client, settings, metrics)
        app.state.settings, app.state.store, app.state.dispatcher = settings, store, dispatcher
        await dispatcher.start()
        log.info("gateway up; Ray Serve app at %s; data in %s", settings.effective_serve_url, settings.data_dir)
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
        metrics=metrics,
        api_token=settings.api_token.get_secret_value() if settings.api_token else None,
    )
    app.include_router(routes_health.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_openai.router)
    return app
