"""OpenAI's `GET /v1/models` and `GET /v1/models/{id}`: the served Whisper model and the `whisper-1` alias.

Shapes as OpenAI's: `{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`; an
unknown id is 404 in OpenAI's error envelope (errors.py). Behind the API token like every route of the port.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from service.api.deps import Services, ServicesDep
from service.api.errors import ApiError

router = APIRouter(prefix="/v1/models", tags=["openai"])
ALIAS = "whisper-1"
OWNER = "spcs-whisper"
STARTED = int(time.time())  # `created`: when this gateway started serving the model


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": STARTED, "owned_by": OWNER}


def _ids(services: Services) -> list[str]:
    served = services.served_model
    return [served] if served == ALIAS else [served, ALIAS]


@router.get("", summary="List models (OpenAI `models.list`)")
async def list_models(services: ServicesDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model(i) for i in _ids(services)]}


@router.get("/{model_id:path}", summary="Retrieve a model (OpenAI `models.retrieve`)")
async def retrieve_model(services: ServicesDep, model_id: str) -> dict[str, Any]:
    if model_id not in _ids(services):
        raise ApiError(404, "model_not_found", f"The model `{model_id}` does not exist on this service")
    return _model(model_id)
