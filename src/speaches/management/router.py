"""Health, readiness and the loaded models (`/api/ps`); the download/delete/registry routes join here."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from speaches.errors import ConflictError, error_responses
from speaches.management.protocol import LoadedModelInfo, LoadedModelList, ModelIdPath, UnloadedModel
from speaches.management.registry import ManagedModel, managed_model
from speaches.management.registry_router import router as registry_router
from speaches.models.manager import ModelManager, ModelStatus
from speaches.state import State

router = APIRouter()
router.include_router(registry_router)


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    """The server is up and answering."""
    return {"status": "ok"}


@router.get("/health/ready", tags=["health"], response_model=None)
async def ready(state: State) -> JSONResponse | dict[str, object]:
    """Ready once every model in PRELOAD_MODELS is loaded (503 until then)."""
    if not state.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    return {"status": "ready", "preload_errors": state.preload_errors}


@router.get("/api/ps", tags=["models"])
async def loaded_models(state: State) -> LoadedModelList:
    """The models in memory (or being loaded/unloaded), with their users and when they will be unloaded."""
    return LoadedModelList(models=[_describe(status, state.models) for status in state.models.status()])


@router.post("/api/ps/{model_id:path}", tags=["models"], status_code=201, responses=error_responses(400, 404, 409))
async def load_model(model_id: ModelIdPath, state: State) -> LoadedModelInfo:
    """Load a model now (201); 409 if it is loaded already. Its TTL starts right away."""
    model = managed_model(model_id, state.settings)
    if state.models.is_loaded(model.kind, model.model_id):
        raise ConflictError(
            f"The model '{model.model_id}' is already loaded.", param="model_id", code="model_already_loaded"
        )
    await state.models.load(model.kind, model.model_id)
    # load() returns without yielding to the loop after its release, so even a TTL of 0 has not
    # unloaded the model yet: its entry is there to describe.
    return _describe(_status_of(model, state.models), state.models)


@router.delete("/api/ps/{model_id:path}", tags=["models"], responses=error_responses(400, 404, 409))
async def unload_model(model_id: ModelIdPath, state: State) -> UnloadedModel:
    """Unload a model now; 404 if it is not loaded, 409 while requests use it (it then stays loaded)."""
    model = managed_model(model_id, state.settings)
    await state.models.unload(model.kind, model.model_id)
    return UnloadedModel(id=model.model_id, kind=model.kind)


def _status_of(model: ManagedModel, models: ModelManager) -> ModelStatus:
    return next(status for status in models.status() if (status.kind, status.model_id) == (model.kind, model.model_id))


def _describe(status: ModelStatus, models: ModelManager) -> LoadedModelInfo:
    expires_at = status.expires_at
    return LoadedModelInfo(
        id=status.model_id,
        kind=status.kind,  # type: ignore[arg-type]
        state=status.state,  # type: ignore[arg-type]
        device=status.device,
        ref_count=status.ref_count,
        last_used=round(status.last_used, 3),
        ttl_seconds=models.kind(status.kind).ttl(),
        expires_at=None if expires_at is None else round(expires_at, 3),
        expires_in_seconds=None if expires_at is None else round(max(0.0, expires_at - time.time()), 3),
    )
