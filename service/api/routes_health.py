"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import ServicesDep
from service.api.errors import error_response, request_id_var
from service.api.schemas import ExportHealth, Health, Readiness
from service.inference.types import AppInfo
from service.jobs.model import JobStatus

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"description": "not ready"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 only when the store answers and the Ray Serve app has its model loaded. With the Snowflake store
    the store is the local queue: a Snowflake outage shows in `snowflake_export`, never makes the gateway
    unready (the export retries, and the queue keeps taking jobs)."""
    try:
        await services.store.ping()
        store = "ok"
    except Exception:  # any store failure means not ready; its details (paths, hosts) go to the log only
        log.warning("readiness: the store does not answer (request %s)", request_id_var.get(), exc_info=True)
        store = "unavailable"
    info = services.dispatcher.model_info
    inference = "ok" if info else "unavailable"
    export = _export(services.store)
    body = Readiness(
        status="ready" if store == "ok" and info else "not_ready",
        store=store,
        snowflake_export=_export_health(export) if export else None,
        inference=inference,
        engine=info.engine if info else None,
        model=info.model if info else None,
        multilingual=info.multilingual if info else None,
    )
    if body.status != "ready":
        return error_response(503, "not_ready", f"store: {store}; inference: {inference}", retry_after=5)
    return JSONResponse(body.model_dump())


def _export_health(export: Any) -> ExportHealth:
    """The export's state for an open endpoint: the kind of its last error, never its text (Snowflake's errors
    name the account, hosts and statements; the log has them)."""
    health = ExportHealth(**export.__dict__)
    if health.last_error:
        kind = health.last_error.split(":", 1)[0].strip()[:80]
        health.last_error = f"{kind} (the gateway's log has the details)"
    return health


def _export(store: object) -> Any:
    status = getattr(store, "export_status", None)
    return status() if status else None


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format: jobs by status, queue depth, audio seconds, latencies, Whisper batch sizes."""
    m = services.metrics
    counts = await services.store.count_by_status()
    for status in JobStatus:
        m.jobs.labels(status.value).set(counts.get(status.value, 0))
    m.queue_depth.set(counts.get("queued", 0))
    m.in_flight.set(services.dispatcher.in_flight)
    if export := _export(services.store):
        m.export_pending.set(export.pending)
        m.export_statements.set(export.statements)
        m.export_failures.set(export.failures)
    info = services.dispatcher.model_info or AppInfo()
    m.batches.set(info.batches)
    m.batch_windows.set(info.windows)
    m.mean_batch_size.set(info.mean_batch_size or 0)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
