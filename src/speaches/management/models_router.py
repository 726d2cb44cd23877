"""The models this server has: `GET /v1/models` and `GET /v1/models/{model_id}` in OpenAI's shapes.

Listed are the models usable without a download: whisper models (bundled, in the Hugging Face
cache, under MODELS_DIR) and, for text to speech, `rhasspy/piper-voices` (the `model` of
/v1/audio/speech) with each piper voice here. Every entry is OpenAI's model object
(`id`, `object`, `created`, `owned_by`) plus `kind` (`stt`/`tts`) and, for files, `source`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from speaches.config import Settings
from speaches.errors import ModelNotFoundError, error_responses
from speaches.models.sources import (
    PIPER_REPO_ID,
    TTS_ALIASES,
    LocalModel,
    check_model_id,
    list_local_piper_voices,
    list_local_whisper_models,
    resolve_stt_alias,
)
from speaches.state import State

router = APIRouter(tags=["models"])


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Literal["stt", "tts"]
    source: Literal["local", "cache", "bundled"] | None = None
    """Where the files are; absent for `rhasspy/piper-voices`, which stands for all the voices."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


@router.get("/v1/models", response_model_exclude_none=True)
async def list_models(state: State) -> ModelList:
    """The models available on this server without a download."""
    return ModelList(data=await asyncio.to_thread(local_models, state.settings))


@router.get("/v1/models/{model_id:path}", response_model_exclude_none=True, responses=error_responses(400, 404))
async def get_model(model_id: str, state: State) -> ModelObject:
    """One model by id (ids contain a slash: `Systran/faster-whisper-base`). Aliases answer with their own id."""
    canonical = PIPER_REPO_ID if model_id in TTS_ALIASES else resolve_stt_alias(model_id, state.settings)
    if canonical != PIPER_REPO_ID:
        check_model_id(canonical, state.settings, param="model_id")
    for model in await asyncio.to_thread(local_models, state.settings):
        if model.id == canonical:
            return model.model_copy(update={"id": model_id})
    raise ModelNotFoundError(
        model_id,
        param="model_id",
        hint="GET /v1/models lists the models on this server; POST /v1/models/{model_id} downloads one.",
    )


def local_models(settings: Settings) -> list[ModelObject]:
    """Blocking (reads the model folders and the Hugging Face cache): call from a thread."""
    whisper = [_model_object(model) for model in list_local_whisper_models(settings)]
    voices = [_model_object(model) for model in list_local_piper_voices(settings)]
    tts: list[ModelObject] = []
    if voices:
        tts.append(
            ModelObject(
                id=PIPER_REPO_ID,
                created=max(voice.created for voice in voices),
                owned_by=_owner(PIPER_REPO_ID),
                kind="tts",
            )
        )
    return whisper + tts + voices


def _model_object(model: LocalModel) -> ModelObject:
    source: Any = model.source
    owner = "rhasspy" if model.kind == "tts" and "/" not in model.model_id else _owner(model.model_id)
    return ModelObject(id=model.model_id, created=model.created, owned_by=owner, kind=model.kind, source=source)


def _owner(model_id: str) -> str:
    return model_id.split("/")[0] if "/" in model_id else "speaches"
