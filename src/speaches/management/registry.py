"""The work behind model management: which manager entry an id names, pulling models from the
Hugging Face Hub into its cache, removing them again, and listing what could be downloaded.

Everything here but :func:`managed_model` and :func:`list_registry` is blocking file or network I/O:
call it from a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speaches.config import OPENAI_VOICE_NAMES, Settings
from speaches.errors import ConflictError, ModelNotFoundError, NotFoundError
from speaches.management.protocol import Kind, RegistryModel
from speaches.models.sources import (
    BUNDLED_PIPER_VOICES,
    BUNDLED_WHISPER_MODELS,
    PIPER_REPO_ID,
    TTS_ALIASES,
    ResolvedModel,
    check_model_id,
    download_piper_voice,
    download_whisper_model,
    find_piper_voice,
    find_whisper_model,
    list_local_piper_voices,
    list_local_whisper_models,
    model_kind_of,
    piper_voice_path_in_repo,
    resolve_stt_alias,
)

logger = logging.getLogger(__name__)

# What /v1/registry asks the Hub for: CTranslate2 conversions of whisper (library and task are both tags).
WHISPER_HUB_FILTER = ["ctranslate2", "automatic-speech-recognition"]
REGISTRY_HUB_LIMIT = 500
PIPER_VOICES_INDEX = "voices.json"


@dataclass(frozen=True)
class ManagedModel:
    """A model id as the model manager keys it: its kind and canonical id (aliases resolved)."""

    kind: Kind
    model_id: str


def managed_model(model_id: str, settings: Settings, *, param: str = "model_id") -> ManagedModel:
    """The manager entry an id names, as requests name it: `whisper-1` -> the default whisper model,
    `tts-1` (or `piper`) and OpenAI voice names (`alloy`, ...) -> the piper voice they stand for."""
    if model_id in settings.tts_voice_aliases or model_id.lower() in OPENAI_VOICE_NAMES:
        return ManagedModel("tts", settings.voice_for(model_id))
    kind = model_kind_of(model_id, settings)
    if kind == "tts":
        if model_id in TTS_ALIASES or model_id == PIPER_REPO_ID:
            return ManagedModel("tts", settings.tts_default_voice)
        return ManagedModel("tts", model_id)
    model_id = resolve_stt_alias(model_id, settings)
    check_model_id(model_id, settings, param=param)
    return ManagedModel("stt", model_id)


# --- pull ---


@dataclass(frozen=True)
class PulledModel:
    model: ManagedModel
    source: str
    """Where the files are now: `download` (just fetched), `cache`, `local` or `bundled`."""
    path: Path

    @property
    def downloaded(self) -> bool:
        return self.source == "download"


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def find_local(model: ManagedModel, settings: Settings) -> ResolvedModel | None:
    """The model's files if they are on this machine already (no download)."""
    try:
        if model.kind == "stt":
            return find_whisper_model(model.model_id, settings, download=False)
        return find_piper_voice(model.model_id, settings, download=False)
    except ModelNotFoundError:
        return None


def pull_model(model: ManagedModel, settings: Settings) -> PulledModel:
    """Make the model available locally, downloading it into the Hugging Face cache if needed."""
    local = find_local(model, settings)
    if local is not None:
        return PulledModel(model, local.source, local.path)
    if os.path.isabs(model.model_id):
        raise ModelNotFoundError(model.model_id, param="model_id", hint="A local path cannot be downloaded.")
    if _hf_offline():
        # 409, not 5xx: nothing failed; the server is configured not to download.
        raise ConflictError(
            f"The model '{model.model_id}' is not on this server and cannot be downloaded: the server is offline "
            "(HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE to download from the Hugging Face Hub, or copy the model "
            "into MODELS_DIR or the Hugging Face cache.",
            param="model_id",
            code="hub_offline",
        )
    if model.kind == "stt":
        path = download_whisper_model(model.model_id)
    else:
        repo_path = piper_voice_path_in_repo(model.model_id)
        if repo_path is None:
            raise ModelNotFoundError(
                model.model_id,
                param="model_id",
                hint="Piper voice names look like 'en_US-lessac-medium'; GET /v1/registry lists them.",
            )
        path = download_piper_voice(model.model_id, repo_path)
    logger.info("downloaded %s model %s to %s", model.kind, model.model_id, path)
    return PulledModel(model, "download", path)


# --- delete ---


@dataclass(frozen=True)
class DeletedModel:
    model: ManagedModel
    freed_bytes: int


def delete_cached_model(model: ManagedModel, settings: Settings) -> DeletedModel:
    """Remove the model's files from the Hugging Face cache. 404 when not cached, 409 for bundled/local ones."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        cache = None
    strategy = None
    if cache is not None:
        if model.kind == "stt":
            revisions = [
                revision.commit_hash
                for repo in cache.repos
                if repo.repo_type == "model" and repo.repo_id == model.model_id and repo.repo_id != PIPER_REPO_ID
                for revision in repo.revisions
            ]
            if revisions:
                strategy = cache.delete_revisions(*revisions)
        else:
            voice_path = piper_voice_path_in_repo(model.model_id)
            wanted = {voice_path, f"{voice_path}.json"} if voice_path else set()
            files = [
                file
                for repo in cache.repos
                if repo.repo_type == "model" and repo.repo_id == PIPER_REPO_ID
                for revision in repo.revisions
                for file in revision.files
                if file.file_path.relative_to(revision.snapshot_path).as_posix() in wanted
            ]
            if files:
                strategy = cache.delete_files(*files)
    if strategy is None:
        local = find_local(model, settings)
        if local is not None:
            raise ConflictError(
                f"The model '{model.model_id}' is not in the Hugging Face cache: it is "
                f"{_describe_source(local.source)}, which this API does not delete.",
                param="model_id",
                code="model_not_deletable",
            )
        raise NotFoundError(
            f"The model '{model.model_id}' is not in the Hugging Face cache.", param="model_id", code="model_not_found"
        )
    strategy.execute()
    logger.info(
        "deleted %s model %s from the cache (%d bytes)", model.kind, model.model_id, strategy.expected_freed_size
    )
    return DeletedModel(model, strategy.expected_freed_size)


def _describe_source(source: str) -> str:
    return {"bundled": "bundled with the server", "local": "a folder under MODELS_DIR"}.get(source, source)


# --- registry ---


@dataclass
class Registry:
    models: list[RegistryModel]
    hub_errors: list[str]


# A Hub that cannot be reached makes huggingface_hub retry for tens of seconds; the listing answers
# with the local and bundled models instead of waiting that long.
HUB_LISTING_TIMEOUT_SECONDS = 15.0


async def list_registry(settings: Settings, kind: Kind | None = None) -> Registry:
    """Models that can be used or downloaded: the Hub's (when reachable) and the bundled ones (always)."""
    wanted: list[Kind] = [kind] if kind is not None else ["stt", "tts"]
    errors: list[str] = []
    hub_listings = {"stt": _hub_whisper_entries, "tts": _hub_piper_entries}
    if _hf_offline():
        errors.append("HF_HUB_OFFLINE is set: the Hugging Face Hub is not asked; local and bundled models are listed.")
    results = await asyncio.gather(
        *(
            asyncio.wait_for(asyncio.to_thread(hub_listings[name]), HUB_LISTING_TIMEOUT_SECONDS)
            for name in wanted
            if not (_hf_offline() and name == "stt")
        ),
        return_exceptions=True,
    )
    entries: dict[tuple[Kind, str], RegistryModel] = {}
    for result in results:
        if isinstance(result, BaseException):
            if not _hf_offline():
                errors.append(f"Listing models on the Hugging Face Hub failed: {_brief(result)}")
            continue
        entries.update({(model.kind, model.id): model for model in result})
    local = await asyncio.to_thread(_local_entries, settings, wanted)
    for key, entry in local.items():
        known = entries.get(key)
        if known is None:
            entries[key] = entry
        else:
            known.bundled, known.available = entry.bundled, entry.available
    return Registry(sorted(entries.values(), key=lambda model: (model.kind, model.id)), errors)


def _local_entries(settings: Settings, kinds: list[Kind]) -> dict[tuple[Kind, str], RegistryModel]:
    entries: dict[tuple[Kind, str], RegistryModel] = {}
    if "stt" in kinds:
        for model_id in BUNDLED_WHISPER_MODELS:
            entries[("stt", model_id)] = _local_entry(model_id, "stt", bundled=True)
        for model in list_local_whisper_models(settings):
            entries.setdefault(("stt", model.model_id), _local_entry(model.model_id, "stt")).available = True
    if "tts" in kinds:
        for voice in BUNDLED_PIPER_VOICES:
            entries[("tts", voice)] = _local_entry(voice, "tts", bundled=True)
        for model in list_local_piper_voices(settings):
            entries.setdefault(("tts", model.model_id), _local_entry(model.model_id, "tts")).available = True
    return entries


def _local_entry(model_id: str, kind: Kind, *, bundled: bool = False) -> RegistryModel:
    # Whisper's `.en` models are English only; the others speak many languages (the Hub lists them).
    language = [_voice_language(model_id)] if kind == "tts" else ["en"] if model_id.endswith(".en") else []
    return RegistryModel(id=model_id, kind=kind, language=language, bundled=bundled, on_hub=False, available=False)


def _hub_whisper_entries() -> list[RegistryModel]:
    from huggingface_hub import HfApi

    return [
        RegistryModel(
            id=info.id,
            kind="stt",
            language=[tag for tag in info.tags or [] if len(tag) == 2 and tag.isalpha() and tag.islower()],
            bundled=False,
            on_hub=True,
            available=False,
            downloads=info.downloads,
            likes=info.likes,
        )
        for info in HfApi().list_models(filter=WHISPER_HUB_FILTER, limit=REGISTRY_HUB_LIMIT)
    ]


def _hub_piper_entries() -> list[RegistryModel]:
    return [
        RegistryModel(
            id=voice,
            kind="tts",
            language=[str(info.get("language", {}).get("code") or _voice_language(voice))],
            size_bytes=sum(int(file.get("size_bytes", 0)) for file in info.get("files", {}).values()),
            bundled=False,
            on_hub=True,
            available=False,
            quality=info.get("quality"),
            num_speakers=info.get("num_speakers"),
        )
        for voice, info in _hub_piper_voices().items()
    ]


def _hub_piper_voices() -> dict[str, Any]:
    """rhasspy/piper-voices' voices.json (cached by huggingface_hub, so a cached copy serves offline too)."""
    from huggingface_hub import hf_hub_download

    with Path(hf_hub_download(PIPER_REPO_ID, PIPER_VOICES_INDEX)).open(encoding="utf-8") as index:
        voices = json.load(index)
    if not isinstance(voices, dict):
        raise ValueError(f"{PIPER_VOICES_INDEX} is not a JSON object")
    return {str(name): info for name, info in voices.items() if isinstance(info, dict)}


def _voice_language(voice: str) -> str:
    return voice.split("-", 1)[0]


def _brief(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
