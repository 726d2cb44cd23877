"""Health, readiness and the loaded models (`/api/ps`); the download/delete/registry routes join here."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from speaches.errors import ConflictError
from speaches.management.registry import managed_model
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
async def loaded_models(state: State) -> dict[str, list[dict[str, Any]]]:
    """The models in memory (or being loaded/unloaded), with their users and when they will be unloaded."""
    return {"models": [_describe(status, state.models) for status in state.models.status()]}


@router.post("/api/ps/{model_id:path}", tags=["models"], status_code=201)
async def load_model(model_id: str, state: State) -> dict[str, Any]:
    """Load a model now (201); 409 if it is loaded already. Its TTL starts right away."""
    model = managed_model(model_id, state.settings)
    if state.models.is_loaded(model.kind, model.model_id):
        raise ConflictError(
            f"The model '{model.model_id}' is already loaded.", param="model_id", code="model_already_loaded"
        )
    await state.models.load(model.kind, model.model_id)
    for status in state.models.status():
        if (status.kind, status.model_id) == (model.kind, model.model_id):
            return _describe(status, state.models)
    # A TTL of 0 may have unloaded it again already; the load itself succeeded.
    return {"id": model.model_id, "kind": model.kind, "state": "unloaded"}


@router.delete("/api/ps/{model_id:path}", tags=["models"])
async def unload_model(model_id: str, state: State) -> dict[str, Any]:
    """Unload a model now; 404 if it is not loaded, 409 while requests use it (it then stays loaded)."""
    model = managed_model(model_id, state.settings)
    await state.models.unload(model.kind, model.model_id)
    return {"id": model.model_id, "kind": model.kind, "unloaded": True}


def _describe(status: ModelStatus, models: ModelManager) -> dict[str, Any]:
    ttl = models.kind(status.kind).ttl()
    return {
        "id": status.model_id,
        "kind": status.kind,
        "state": status.state,
        "device": status.device,
        "ref_count": status.ref_count,
        "last_used": round(status.last_used, 3),
        "ttl_seconds": ttl,
        "expires_at": None if status.expires_at is None else round(status.expires_at, 3),
        "expires_in_seconds": None
        if status.expires_at is None
        else max(0.0, round(status.expires_at - time.time(), 3)),
    }
