"""Wire shapes of model management: /v1/models, /api/ps and /v1/registry; one type per concept (plain pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from speaches.models.catalog import Kind
from speaches.models.sources import SourceName


class ModelObject(BaseModel):
    """OpenAI's model object (`id`, `object`, `created`, `owned_by`) plus its kind and where its files are."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Kind
    source: SourceName | None = Field(
        default=None,
        description=(
            "Where the files are: `local` (MODELS_DIR), `cache` (Hugging Face cache), `bundled`, or `download` "
            "when this request fetched them; absent for `rhasspy/piper-voices`, which stands for all the voices."
        ),
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class DownloadedModel(ModelObject):
    """The answer to a pull: the model object, and whether this request downloaded it."""

    downloaded: bool


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
