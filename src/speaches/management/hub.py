"""The work behind model management on disk and the Hub: pulling models from the Hugging Face Hub
into its cache, removing them again, and listing what could be downloaded.

Everything here but :func:`list_registry` is blocking file or network I/O: call it in the model I/O pool
(`speaches.models.io`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speaches import __version__
from speaches.config import Settings
from speaches.errors import ConflictError, ModelNotFoundError, NotFoundError
from speaches.management.protocol import RegistryModel
from speaches.models.catalog import PIPER_REPO_ID, Kind, ModelRef, piper_voice_path_in_repo
from speaches.models.io import ModelIO
from speaches.models.sources import (
    BUNDLED_PIPER_VOICES,
    BUNDLED_WHISPER_MODELS,
    ResolvedModel,
    SourceName,
    download_piper_voice,
    download_whisper_model,
    find_piper_voice,
    find_whisper_model,
    hub_offline,
    is_whisper_folder,
    list_local_piper_voices,
    list_local_whisper_models,
)

logger = logging.getLogger(__name__)

# What /v1/registry asks the Hub for: CTranslate2 conversions of whisper (library and task are both tags).
WHISPER_HUB_FILTER = ["ctranslate2", "automatic-speech-recognition"]
REGISTRY_HUB_LIMIT = 500
PIPER_VOICES_INDEX = "voices.json"


# --- pull ---


@dataclass(frozen=True)
class PulledModel:
    ref: ModelRef
    source: SourceName
    """Where the files are now: `download` (just fetched), `cache`, `local` or `bundled`."""
    path: Path

    @property
    def downloaded(self) -> bool:
        return self.source == "download"


def find_local(ref: ModelRef, settings: Settings) -> ResolvedModel | None:
    """The model's files if they are on this machine already (no download)."""
    try:
        if ref.kind is Kind.STT:
            return find_whisper_model(ref, settings, download=False)
        return find_piper_voice(ref, settings, download=False)
    except ModelNotFoundError:
        return None


def pull_model(ref: ModelRef, settings: Settings) -> PulledModel:
    """Make the model available locally, downloading it into the Hugging Face cache if needed."""
    local = find_local(ref, settings)
    if local is not None:
        return PulledModel(ref, local.source, local.path)
    if ref.local_path is not None:
        raise ModelNotFoundError(ref.id, param="model_id", hint="A local path cannot be downloaded.")
    if hub_offline():
        # 409, not 5xx: nothing failed; the server is configured not to download.
        raise ConflictError(
            f"The model '{ref.id}' is not on this server and cannot be downloaded: the server is offline "
            "(HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE to download from the Hugging Face Hub, or copy the model "
            "into MODELS_DIR or the Hugging Face cache.",
            param="model_id",
            code="hub_offline",
        )
    if ref.kind is Kind.STT:
        path = download_whisper_model(ref.id, settings)
    else:
        repo_path = piper_voice_path_in_repo(ref.id)
        if repo_path is None:
            raise ModelNotFoundError(
                ref.id,
                param="model_id",
                hint="Piper voice names look like 'en_US-lessac-medium'; GET /v1/registry lists them.",
            )
        path = download_piper_voice(ref.id, repo_path, settings)
    logger.info("downloaded %s model %s to %s", ref.kind, ref.id, path)
    return PulledModel(ref, "download", path)


# --- delete ---


def delete_cached_model(ref: ModelRef, settings: Settings) -> int:
    """Remove the model's files from the Hugging Face cache; the bytes freed. 404 when not cached, 409 for
    bundled/local ones.

    Only what this server can use is ever deleted: a CTranslate2 whisper repo (a snapshot with model.bin
    and config.json) or one piper voice's two files. The cache may be shared with other programs; any
    other repo in it, whatever its id, is not this API's to remove.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        cache = None
    strategy = None
    if cache is not None:
        if ref.kind is Kind.STT:
            repos = [
                repo
                for repo in cache.repos
                if repo.repo_type == "model" and repo.repo_id == ref.id and repo.repo_id != PIPER_REPO_ID
            ]
            revisions = [
                revision.commit_hash
                for repo in repos
                if any(is_whisper_folder(revision.snapshot_path) for revision in repo.revisions)
                for revision in repo.revisions
            ]
            if revisions:
                strategy = cache.delete_revisions(*revisions)
        else:
            voice_path = piper_voice_path_in_repo(ref.id)
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
        local = find_local(ref, settings)
        if local is not None:
            raise ConflictError(
                f"The model '{ref.id}' is not in the Hugging Face cache: it is "
                f"{_describe_source(local.source)}, which this API does not delete.",
                param="model_id",
                code="model_not_deletable",
            )
        raise NotFoundError(
            f"The model '{ref.id}' is not a speech model in the Hugging Face cache; this API deletes only "
            "CTranslate2 whisper models and piper voices, and nothing else in a cache it may share.",
            param="model_id",
            code="model_not_found",
        )
    strategy.execute()
    logger.info("deleted %s model %s from the cache (%d bytes)", ref.kind, ref.id, strategy.expected_freed_size)
    return int(strategy.expected_freed_size)


def _describe_source(source: str) -> str:
    return {"bundled": "bundled with the server", "local": "a folder under MODELS_DIR"}.get(source, source)


# --- registry ---


@dataclass
class Registry:
    models: list[RegistryModel]
    hub_errors: list[str]


# A Hub that cannot be reached makes huggingface_hub retry for tens of seconds; the listing answers
# with the local and bundled models instead of waiting that long, and the listing's own thread stops
# reading at the same deadline.
HUB_LISTING_TIMEOUT_SECONDS = 15.0
_HUB_LISTING_MAX_BYTES = 32 * 1024 * 1024
_last_piper_index: Any = None
"""The piper voice index as the Hub last sent it, for when the Hub cannot be asked."""


async def list_registry(settings: Settings, io: ModelIO, kind: Kind | None = None) -> Registry:
    """Models that can be used or downloaded: the Hub's (when reachable) and the bundled ones (always)."""
    wanted: list[Kind] = [kind] if kind is not None else list(Kind)
    errors: list[str] = []
    hub_listings = {Kind.STT: _hub_whisper_entries, Kind.TTS: _hub_piper_entries}
    offline = hub_offline()
    if offline:
        errors.append("HF_HUB_OFFLINE is set: the Hugging Face Hub is not asked; local and bundled models are listed.")
    results = await asyncio.gather(
        *(
            io.hub(("registry", name), hub_listings[name], HUB_LISTING_TIMEOUT_SECONDS)
            for name in wanted
            if not (offline and name is Kind.STT)
        ),
        return_exceptions=True,
    )
    entries: dict[tuple[Kind, str], RegistryModel] = {}
    for result in results:
        if isinstance(result, BaseException):
            if not offline:
                errors.append(f"Listing models on the Hugging Face Hub failed: {_brief(result)}")
            continue
        entries.update({(model.kind, model.id): model for model in result})
    local = await io.files(_local_entries, settings, wanted)
    for key, entry in local.items():
        known = entries.get(key)
        if known is None:
            entries[key] = entry
        else:
            known.bundled, known.available = entry.bundled, entry.available
    return Registry(sorted(entries.values(), key=lambda model: (model.kind, model.id)), errors)


def _hub_get(path: str, params: list[tuple[str, str]] | None = None) -> bytes:
    """GET a Hub endpoint, giving up (and closing the connection) at the listing deadline.

    The standard library's client rather than huggingface_hub's, whose client retries a first read
    that takes over 3 s with a fresh request, which would outlive the deadline."""
    from huggingface_hub import constants, get_token

    deadline = time.monotonic() + HUB_LISTING_TIMEOUT_SECONDS
    url = f"{constants.ENDPOINT.rstrip('/')}/{path}"
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    # Not huggingface_hub's build_hf_headers: its user agent is worked out by asking the Hub once more.
    headers = {"User-Agent": f"speaches/{__version__}"}
    if token := get_token():
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    # The timeout bounds each wait for the Hub; the deadline bounds the whole answer.
    with urllib.request.urlopen(request, timeout=HUB_LISTING_TIMEOUT_SECONDS) as response:
        body = bytearray()
        while chunk := response.read(64 * 1024):
            body += chunk
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Hub did not finish answering within {HUB_LISTING_TIMEOUT_SECONDS:.0f} s")
            if len(body) > _HUB_LISTING_MAX_BYTES:
                raise ValueError(f"the Hub's answer for {path} is larger than {_HUB_LISTING_MAX_BYTES} bytes")
    return bytes(body)


def _local_entries(settings: Settings, kinds: list[Kind]) -> dict[tuple[Kind, str], RegistryModel]:
    entries: dict[tuple[Kind, str], RegistryModel] = {}
    if Kind.STT in kinds:
        for model_id in BUNDLED_WHISPER_MODELS:
            entries[(Kind.STT, model_id)] = _local_entry(model_id, Kind.STT, bundled=True)
        for model in list_local_whisper_models(settings):
            entries.setdefault((Kind.STT, model.model_id), _local_entry(model.model_id, Kind.STT)).available = True
    if Kind.TTS in kinds:
        for voice in BUNDLED_PIPER_VOICES:
            entries[(Kind.TTS, voice)] = _local_entry(voice, Kind.TTS, bundled=True)
        for model in list_local_piper_voices(settings):
            entries.setdefault((Kind.TTS, model.model_id), _local_entry(model.model_id, Kind.TTS)).available = True
    return entries


def _local_entry(model_id: str, kind: Kind, *, bundled: bool = False) -> RegistryModel:
    # Whisper's `.en` models are English only; the others speak many languages (the Hub lists them).
    language = [_voice_language(model_id)] if kind is Kind.TTS else ["en"] if model_id.endswith(".en") else []
    return RegistryModel(id=model_id, kind=kind, language=language, bundled=bundled, on_hub=False, available=False)


def _hub_whisper_entries() -> list[RegistryModel]:
    params = [("filter", tag) for tag in WHISPER_HUB_FILTER] + [("limit", str(REGISTRY_HUB_LIMIT))]
    listing = json.loads(_hub_get("api/models", params))
    if not isinstance(listing, list):
        raise ValueError("the Hub's model listing is not a JSON list")
    return [
        RegistryModel(
            id=str(info["id"]),
            kind=Kind.STT,
            language=[tag for tag in info.get("tags") or [] if len(tag) == 2 and tag.isalpha() and tag.islower()],
            bundled=False,
            on_hub=True,
            available=False,
            downloads=info.get("downloads"),
            likes=info.get("likes"),
        )
        for info in listing
        if isinstance(info, dict) and "id" in info
    ]


def _hub_piper_entries() -> list[RegistryModel]:
    return [
        RegistryModel(
            id=voice,
            kind=Kind.TTS,
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
    """rhasspy/piper-voices' voices.json from the Hub, within the listing deadline. When the Hub cannot be
    asked (offline) or fails, the last copy this process fetched, or one in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    global _last_piper_index
    try:
        if hub_offline():
            raise RuntimeError("HF_HUB_OFFLINE is set")
        voices = json.loads(_hub_get(f"{PIPER_REPO_ID}/resolve/main/{PIPER_VOICES_INDEX}"))
        _last_piper_index = voices
    except Exception:
        if _last_piper_index is not None:
            voices = _last_piper_index
        else:
            cached = try_to_load_from_cache(PIPER_REPO_ID, PIPER_VOICES_INDEX)
            if not isinstance(cached, str):
                raise
            voices = json.loads(Path(cached).read_text(encoding="utf-8"))
    if not isinstance(voices, dict):
        raise ValueError(f"{PIPER_VOICES_INDEX} is not a JSON object")
    return {str(name): info for name, info in voices.items() if isinstance(info, dict)}


def _voice_language(voice: str) -> str:
    return voice.split("-", 1)[0]


def _brief(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
