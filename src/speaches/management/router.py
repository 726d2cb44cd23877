"""Health and readiness; the model management endpoints join them here."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from speaches.state import State

router = APIRouter()


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
