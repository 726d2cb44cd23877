"""`/api/ps`: the models in memory; load one now, unload one now."""

from __future__ import annotations

import time

from fastapi import APIRouter

from speaches.errors import ConflictError
from speaches.management.params import ModelIdPath
from speaches.management.protocol import LoadedModelInfo, LoadedModelList, UnloadedModel
from speaches.models.manager import ModelManager, ModelStatus
from speaches.web.dependencies import State
from speaches.web.errors import error_responses

router = APIRouter(tags=["models"])


@router.get("/api/ps")
async def loaded_models(state: State) -> LoadedModelList:
    """The models in memory (or being loaded/unloaded), with their users and when they will be unloaded."""
    return LoadedModelList(models=[_describe(status, state.models) for status in state.models.status()])


@router.post("/api/ps/{model_id:path}", status_code=201, responses=error_responses(400, 404, 409))
async def load_model(model_id: ModelIdPath, state: State) -> LoadedModelInfo:
    """Load a model now (201); 409 if it is loaded already. Its TTL starts right away."""
    ref = state.catalog.any(model_id)
    if state.models.is_loaded(ref):
        raise ConflictError(f"The model '{ref.id}' is already loaded.", param="model_id", code="model_already_loaded")
    await state.models.load(ref)
    # load() returns without yielding to the loop after its release, so even a TTL of 0 has not
    # unloaded the model yet: its entry is there to describe.
    status = state.models.status_of(ref)
    assert status is not None
    return _describe(status, state.models)


@router.delete("/api/ps/{model_id:path}", responses=error_responses(400, 404, 409))
async def unload_model(model_id: ModelIdPath, state: State) -> UnloadedModel:
    """Unload a model now; 404 if it is not loaded, 409 while requests use it (it then stays loaded)."""
    ref = state.catalog.any(model_id)
    await state.models.unload(ref)
    return UnloadedModel(id=ref.id, kind=ref.kind)


def _describe(status: ModelStatus, models: ModelManager) -> LoadedModelInfo:
    expires_at = status.expires_at
    return LoadedModelInfo(
        id=status.model_id,
        kind=status.kind,
        state=status.state,
        device=status.device,
        ref_count=status.ref_count,
        last_used=round(status.last_used, 3),
        ttl_seconds=models.kind(status.kind).ttl(),
        expires_at=None if expires_at is None else round(expires_at, 3),
        expires_in_seconds=None if expires_at is None else round(max(0.0, expires_at - time.time()), 3),
    )
