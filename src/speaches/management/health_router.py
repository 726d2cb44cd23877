"""`/health` (the server answers) and `/health/ready` (the models in PRELOAD_MODELS are loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from speaches.web.dependencies import State

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The server is up and answering."""
    return {"status": "ok"}


@router.get("/health/ready", response_model=None)
async def ready(state: State) -> JSONResponse | dict[str, object]:
    """Ready once every model in PRELOAD_MODELS is loaded (503 until then)."""
    if not state.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    return {"status": "ready", "preload_errors": state.preload_errors}
