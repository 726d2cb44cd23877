"""`GET /v1/registry`: the models that could be downloaded from the Hub, and the bundled ones."""

from __future__ import annotations

from fastapi import APIRouter, Query

from speaches.management.hub import list_registry
from speaches.management.protocol import RegistryList
from speaches.models.catalog import Kind
from speaches.web.dependencies import State
from speaches.web.errors import error_responses

router = APIRouter(tags=["models"])


@router.get("/v1/registry", responses=error_responses(400), response_model_exclude_none=True)
async def registry(
    state: State, kind: Kind | None = Query(default=None, description="Only this kind: `stt` or `tts`.")
) -> RegistryList:
    """Models that can be downloaded: the Hub's whisper CTranslate2 repos and piper voices, and the bundled ones."""
    found = await list_registry(state.settings, state.models.io, kind)
    return RegistryList(data=found.models, hub_errors=found.hub_errors)
