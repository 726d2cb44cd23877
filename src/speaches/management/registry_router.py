"""Pull models from the Hugging Face Hub, delete them from its cache, list what could be pulled.

`POST /v1/models/{model_id}`, `DELETE /v1/models/{model_id}`, `GET /v1/registry`. The listing of
models already here (`GET /v1/models`) lives in `models_router.py`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from speaches.errors import ConflictError
from speaches.management.registry import (
    delete_cached_model,
    list_registry,
    managed_model,
    pull_model,
)
from speaches.state import State

router = APIRouter(tags=["models"])


@router.post("/v1/models/{model_id:path}", response_model=None)
async def download_model(model_id: str, state: State) -> JSONResponse:
    """Download a model into the Hugging Face cache: 201 when downloaded, 200 when it was here already."""
    model = managed_model(model_id, state.settings)
    pulled = await asyncio.to_thread(pull_model, model, state.settings)
    body = {
        "id": model.model_id,
        "object": "model",
        "created": int(time.time()),
        "owned_by": model.model_id.split("/")[0] if "/" in model.model_id else "speaches",
        "kind": model.kind,
        "source": pulled.source,
        "downloaded": pulled.downloaded,
    }
    return JSONResponse(body, status_code=201 if pulled.downloaded else 200)


@router.delete("/v1/models/{model_id:path}")
async def delete_model(model_id: str, state: State) -> dict[str, Any]:
    """Remove a model from the Hugging Face cache (409 while it is loaded: unload it first)."""
    model = managed_model(model_id, state.settings)
    if any(status.kind == model.kind and status.model_id == model.model_id for status in state.models.status()):
        raise ConflictError(
            f"The model '{model.model_id}' is loaded; unload it first (DELETE /api/ps/{model.model_id}).",
            param="model_id",
            code="model_loaded",
        )
    deleted = await asyncio.to_thread(delete_cached_model, model, state.settings)
    return {"id": model.model_id, "object": "model", "deleted": True, "freed_bytes": deleted.freed_bytes}


@router.get("/v1/registry")
async def registry(
    state: State, kind: Literal["stt", "tts"] | None = Query(default=None, description="Only this kind.")
) -> dict[str, Any]:
    """Models that can be downloaded: the Hub's whisper CTranslate2 repos and piper voices, and the bundled ones."""
    found = await list_registry(state.settings, kind)
    return {
        "object": "list",
        "data": [
            {
                "id": entry.id,
                "object": "model",
                "kind": entry.kind,
                "language": entry.language,
                "size_bytes": entry.size_bytes,
                "bundled": entry.bundled,
                "on_hub": entry.on_hub,
                "available": entry.available,
                **entry.details,
            }
            for entry in found.entries
        ],
        "hub_errors": found.hub_errors,
    }
