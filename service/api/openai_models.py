"""OpenAI's `GET /v1/models` and `GET /v1/models/{id}`: the served Whisper model and the `whisper-1` alias.

Shapes as OpenAI's: `{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`; an
unknown id is 404 in OpenAI's error envelope (errors.py). Behind the API token like every route of the port.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from service.api.errors import ApiError

router = APIRouter(prefix="/v1/models", tags=["openai"])
ALIAS = "whisper-1"
OWNER = "spcs-whisper"
STARTED = int(time.time())  # `created`: when this gateway started serving the model


def served_model(state: Any) -> str:
    """The model the Ray app says it runs (its /ready `model`), else the configured one."""
    info = getattr(state.dispatcher, "model_info", None) or {}
    return str(info.get("model") or state.settings.model)


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": STARTED, "owned_by": OWNER}


def _ids(state: Any) -> list[str]:
    served = served_model(state)
    return [served] if served == ALIAS else [served, ALIAS]


@router.get("", summary="List models (OpenAI `models.list`)")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model(i) for i in _ids(request.app.state)]}


@router.get("/{model_id:path}", summary="Retrieve a model (OpenAI `models.retrieve`)")
async def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    if model_id not in _ids(request.app.state):
        raise ApiError(404, "model_not_found", f"The model `{model_id}` does not exist on this service")
    return _model(model_id)
