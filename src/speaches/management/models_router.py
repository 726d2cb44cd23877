"""`/v1/models`: the models this server has (list, get) in OpenAI's shapes, pulling one from the Hub, deleting one."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from speaches.errors import ConflictError, ModelNotFoundError
from speaches.management.hub import delete_cached_model, pull_model
from speaches.management.inventory import local_models
from speaches.management.params import ModelIdPath
from speaches.management.protocol import DeletedModel, DownloadedModel, ModelList, ModelObject
from speaches.models.catalog import owner_of
from speaches.web.dependencies import State
from speaches.web.errors import error_responses

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model_exclude_none=True)
async def list_models(state: State) -> ModelList:
    """The models available on this server without a download."""
    return ModelList(data=await state.models.io.files(local_models, state.settings))


@router.get("/v1/models/{model_id:path}", response_model_exclude_none=True, responses=error_responses(400, 404))
async def get_model(model_id: str, state: State) -> ModelObject:
    """One model by id (ids contain a slash: `Systran/faster-whisper-base`). Aliases answer with their own id."""
    canonical = state.catalog.listed_id(model_id)
    for model in await state.models.io.files(local_models, state.settings):
        if model.id == canonical:
            return model.model_copy(update={"id": model_id})
    raise ModelNotFoundError(
        model_id,
        param="model_id",
        hint="GET /v1/models lists the models on this server; POST /v1/models/{model_id} downloads one.",
    )


@router.post(
    "/v1/models/{model_id:path}",
    status_code=201,
    response_model_exclude_none=True,
    responses={
        200: {"model": DownloadedModel, "description": "It was here already."},
        **error_responses(400, 403, 404, 409, 503),
    },
)
async def download_model(model_id: ModelIdPath, state: State, response: Response) -> DownloadedModel:
    """Download a model into the Hugging Face cache: 201 when downloaded, 200 when it was here already."""
    ref = state.catalog.any(model_id)
    pulled = await state.models.io.transfer(pull_model, ref, state.settings)
    if not pulled.downloaded:
        response.status_code = 200
    return DownloadedModel(
        id=ref.id,
        created=int(time.time()),
        owned_by=owner_of(ref),
        kind=ref.kind,
        source=pulled.source,
        downloaded=pulled.downloaded,
    )


@router.delete("/v1/models/{model_id:path}", responses=error_responses(400, 404, 409))
async def delete_model(model_id: ModelIdPath, state: State) -> DeletedModel:
    """Remove a speech model (a CTranslate2 whisper repo or a piper voice) from the Hugging Face cache; 409 while
    it is loaded (unload it first). Nothing else in the cache is ever removed."""
    ref = state.catalog.any(model_id)
    if state.models.status_of(ref) is not None:
        raise ConflictError(
            f"The model '{ref.id}' is loaded; unload it first (DELETE /api/ps/{ref.id}).",
            param="model_id",
            code="model_loaded",
        )
    freed_bytes = await state.models.io.files(delete_cached_model, ref, state.settings)
    return DeletedModel(id=ref.id, freed_bytes=freed_bytes)
