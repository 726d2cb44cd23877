"""Wire shapes of the model management endpoints (/api/ps, POST/DELETE /v1/models, /v1/registry)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from speaches.models.sources import MODEL_ID_PATTERN

Kind = Literal["stt", "tts"]

ModelIdPath = Annotated[
    str,
    Path(
        pattern=MODEL_ID_PATTERN,
        description=(
            "A model id: a Hugging Face repo id (`Systran/faster-whisper-base`), a folder under MODELS_DIR, "
            "a piper voice (`en_US-joe-medium`) or an alias (`whisper-1`, `tts-1`)."
        ),
        examples=["Systran/faster-whisper-tiny.en"],
    ),
]


class LoadedModelInfo(BaseModel):
    """A model in memory, as `GET /api/ps` lists it."""

    id: str
    kind: Kind
    state: Literal["loading", "loaded", "unloading"]
    device: str | None = Field(description="`cpu` or `cuda`; null while loading.")
    ref_count: int = Field(description="Requests using the model now (or waiting for it to load).")
    last_used: float = Field(description="Unix time of the last use (or of the load).")
    ttl_seconds: int = Field(description="Idle seconds before an unload: -1 never, 0 right after use.")
    expires_at: float | None = Field(description="Unix time it will be unloaded; null while in use or with TTL -1.")
    expires_in_seconds: float | None


class LoadedModelList(BaseModel):
    models: list[LoadedModelInfo]


class UnloadedModel(BaseModel):
    id: str
    kind: Kind
    unloaded: Literal[True] = True


class DownloadedModel(BaseModel):
    """OpenAI's model object plus where its files now are."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Kind
    source: Literal["download", "cache", "local", "bundled"] = Field(
        description="`download` when this request fetched it; otherwise where it already was."
    )
    downloaded: bool


class DeletedModel(BaseModel):
    """OpenAI's deletion shape plus the bytes freed on disk."""

    id: str
    object: Literal["model"] = "model"
    deleted: Literal[True] = True
    freed_bytes: int


class RegistryModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    kind: Kind
    language: list[str] = Field(description="Language codes the Hub lists for it (piper: `en_US`); may be empty.")
    size_bytes: int | None = None
    bundled: bool = Field(description="Ships with the server: usable offline, never downloaded.")
    on_hub: bool = Field(description="Listed by the Hugging Face Hub in this answer.")
    available: bool = Field(description="Usable now without a download (bundled, in MODELS_DIR or cached).")
    downloads: int | None = None
    likes: int | None = None
    quality: str | None = None
    num_speakers: int | None = None


class RegistryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RegistryModel]
    hub_errors: list[str] = Field(description="Why Hub listings are missing (offline, unreachable); empty when none.")
