"""The gateway's services as FastAPI dependencies: `Services` is made once per app by its lifespan (app.py);
routes name what they need with the `...Dep` annotations (`store: StoreDep`), never `request.app.state`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.api.callers import Caller
from service.api.errors import ApiError
from service.api.function_batches import FunctionBatches
from service.api.openai_retries import Attachments
from service.config import Settings
from service.inference.client import Inference
from service.jobs.dispatcher import Dispatcher
from service.metrics import Metrics
from service.storage.base import JobStore
from service.storage.stages import StageReader
from service.translate.base import Translator


@dataclass
class Services:
    """Everything the routes use, alive while the app's lifespan runs (one store, one dispatcher per app)."""

    settings: Settings
    metrics: Metrics
    store: JobStore
    stages: StageReader
    inference: Inference
    translator: Translator | None
    dispatcher: Dispatcher
    function_batches: FunctionBatches
    attachments: Attachments
    intake: ThreadPoolExecutor  # uploads' file work (copy, fsync, probe): a small pool of its own (uploads.py)
    long_polls: int = 0  # `GET /v1/jobs/{id}?wait=` requests held now (MAX_LONG_POLLS)

    @property
    def served_model(self) -> str:
        """The model the Ray app says it runs (its /ready `model`), else the configured one."""
        info = self.dispatcher.model_info
        return info.model if info is not None and info.model else self.settings.inference.model


def services(request: Request) -> Services:
    """The app's services; 503 outside its lifespan (an app served without running it)."""
    found = getattr(request.app.state, "services", None)
    if not isinstance(found, Services):
        raise ApiError(503, "unavailable", "the gateway is starting or stopping")
    return found


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # set by create_app: available before the lifespan too


def _store(request: Request) -> JobStore:
    return services(request).store


def _stages(request: Request) -> StageReader:
    return services(request).stages


def _dispatcher(request: Request) -> Dispatcher:
    return services(request).dispatcher


def _inference(request: Request) -> Inference:
    return services(request).inference


def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # made by create_app, shared with the RequestContext middleware


def _function_batches(request: Request) -> FunctionBatches:
    return services(request).function_batches


def _attachments(request: Request) -> Attachments:
    return services(request).attachments


def _caller(request: Request, settings: Annotated[Settings, Depends(_settings)]) -> Caller:
    return Caller.of(request, settings)


ServicesDep = Annotated[Services, Depends(services)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
StagesDep = Annotated[StageReader, Depends(_stages)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
InferenceDep = Annotated[Inference, Depends(_inference)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
FunctionBatchesDep = Annotated[FunctionBatches, Depends(_function_batches)]
AttachmentsDep = Annotated[Attachments, Depends(_attachments)]
CallerDep = Annotated[Caller, Depends(_caller)]  # who calls, and which jobs they see
