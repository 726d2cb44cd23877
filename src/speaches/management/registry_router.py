"""Pull models from the Hugging Face Hub, delete them from its cache, list what could be pulled.

`POST /v1/models/{model_id}`, `DELETE /v1/models/{model_id}`, `GET /v1/registry`. The listing of
models already here (`GET /v1/models`) lives in `models_router.py`.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Query, Response

from speaches.errors import ConflictError, error_responses
from speaches.management.protocol import DeletedModel, DownloadedModel, Kind, ModelIdPath, RegistryList
from speaches.management.registry import delete_cached_model, list_registry, managed_model, pull_model
from speaches.state import State

router = APIRouter(tags=["models"])


@router.post(
    "/v1/models/{model_id:path}",
    status_code=201,
    responses={
        200: {"model": DownloadedModel, "description": "It was here already."},
        **error_responses(400, 404, 409),
    },
)
async def download_model(model_id: ModelIdPath, state: State, response: Response) -> DownloadedModel:
    """Download a model into the Hugging Face cache: 201 when downloaded, 200 when it was here already."""
    model = managed_model(model_id, state.settings)
    pulled = await asyncio.to_thread(pull_model, model, state.settings)
    if not pulled.downloaded:
        response.status_code = 200
    return DownloadedModel(
        id=model.model_id,
        created=int(time.time()),
        owned_by="rhasspy" if model.kind == "tts" else model.model_id.split("/")[0],
        kind=model.kind,
        source=pulled.source,  # type: ignore[arg-type]
        downloaded=pulled.downloaded,
    )


@router.delete("/v1/models/{model_id:path}", responses=error_responses(400, 404, 409))
async def delete_model(model_id: ModelIdPath, state: State) -> DeletedModel:
    """Remove a model from the Hugging Face cache (409 while it is loaded: unload it first)."""
    model = managed_model(model_id, state.settings)
    if any((status.kind, status.model_id) == (model.kind, model.model_id) for status in state.models.status()):
        raise ConflictError(
            f"The model '{model.model_id}' is loaded; unload it first (DELETE /api/ps/{model.model_id}).",
            param="model_id",
            code="model_loaded",
        )
    deleted = await asyncio.to_thread(delete_cached_model, model, state.settings)
    return DeletedModel(id=model.model_id, freed_bytes=deleted.freed_bytes)


@router.get("/v1/registry", responses=error_responses(400), response_model_exclude_none=True)
async def registry(
    state: State, kind: Kind | None = Query(default=None, description="Only this kind: `stt` or `tts`.")
) -> RegistryList:
    """Models that can be downloaded: the Hub's whisper CTranslate2 repos and piper voices, and the bundled ones."""
    found = await list_registry(state.settings, kind)
    return RegistryList(data=found.models, hub_errors=found.hub_errors)
