"""The model catalog: a request's model name, resolved once at the edge into one typed reference.

A client names a model in many ways: an alias (`whisper-1`, `tts-1`), a Hugging Face repo id
(`Systran/faster-whisper-base`), a folder under MODELS_DIR, an absolute path (when allowed), a piper
voice (`en_US-joe-medium`) or an OpenAI voice name (`alloy`). :class:`Catalog` turns any of them into a
:class:`ModelRef` (kind, canonical id, and whether its files are named by path) and refuses names that
could reach outside the model folders, before any work starts. Everything downstream (the model
manager, the loaders, the management API) takes the reference, never the raw name.

Nothing here touches the disk except :meth:`Catalog.kind_of`, which looks for a voice file under
MODELS_DIR; the files themselves are found by `speaches.models.sources`.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path

from speaches.config import Settings
from speaches.errors import InvalidRequestError, ModelNotFoundError, shorten


class Kind(enum.StrEnum):
    """The kinds of model this server runs; the value is what /api/ps and /v1/models show."""

    STT = "stt"
    """Speech to text: a CTranslate2 whisper model (faster-whisper)."""
    TTS = "tts"
    """Text to speech: a piper voice."""


WHISPER_ALIASES = frozenset({"whisper-1"})
PIPER_REPO_ID = "rhasspy/piper-voices"
"""The Hugging Face repo that holds every piper voice; also the `model` of /v1/audio/speech."""
TTS_ALIASES = frozenset({"piper", "tts-1", "tts-1-hd"})
OPENAI_VOICE_NAMES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
MODEL_ID_PATTERN = _REPO_ID.pattern
"""What a model id looks like (a repo id or a folder under MODELS_DIR), for API schemas."""
_VOICE_NAME = re.compile(r"^(?P<lang>[a-z]{2,3}_[A-Z]{2})-(?P<name>[\w]+)-(?P<quality>x_low|low|medium|high)$")
# A voice is a file name under MODELS_DIR or the voices repo: no separators, no hidden files, and
# short enough for any file system (a 300-character name would fail in the OS, not here).
_VOICE_FILE_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,199}$")
_LIST_VOICES_HINT = "GET /v1/audio/voices lists the voices this server has."


@dataclass(frozen=True)
class ModelRef:
    """One model, as every layer below the edge names it."""

    kind: Kind
    id: str
    """Canonical: aliases resolved. A repo id, a MODELS_DIR folder, a voice name, or an absolute path."""

    @property
    def local_path(self) -> Path | None:
        """The folder the client named by absolute path (ALLOW_LOCAL_MODEL_PATHS), else None."""
        return Path(self.id) if os.path.isabs(self.id) else None

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


def piper_voice_path_in_repo(voice: str) -> str | None:
    """`en_US-joe-medium` -> `en/en_US/joe/medium/en_US-joe-medium.onnx`; None if not a voice name."""
    match = _VOICE_NAME.match(voice)
    if match is None:
        return None
    lang = match["lang"]
    return f"{lang.split('_')[0]}/{lang}/{match['name']}/{match['quality']}/{voice}.onnx"


def owner_of(ref: ModelRef) -> str:
    """OpenAI's `owned_by`: the repo's organisation; piper voices belong to `rhasspy`; local folders to us."""
    if ref.kind is Kind.TTS and "/" not in ref.id:
        return "rhasspy"
    if ref.local_path is None and "/" in ref.id:
        return ref.id.split("/")[0]
    return "speaches"


class Catalog:
    """Resolves model names with this server's settings (default model, voice aliases, MODELS_DIR)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- speech to text ---

    def stt(self, name: str | None, *, param: str = "model") -> ModelRef:
        """The whisper model a request means: `whisper-1` and an empty name stand for the default model."""
        # Only an absent or empty name means the default; a blank one is a mistake worth a 400.
        model_id = name or self.settings.whisper.model
        if model_id in WHISPER_ALIASES:
            model_id = self.settings.whisper.model
        self.check_model_id(model_id, param=param)
        return ModelRef(Kind.STT, model_id)

    def listed_id(self, name: str) -> str:
        """The id under which /v1/models lists a name: aliases resolved; 400 for a name that cannot be an id."""
        if name in TTS_ALIASES:
            return PIPER_REPO_ID
        model_id = self.settings.whisper.model if name in WHISPER_ALIASES else name
        self.check_model_id(model_id, param="model_id")
        return model_id

    def check_model_id(self, model_id: str, *, param: str = "model") -> None:
        """Reject ids that could reach outside the model folders (400)."""
        if not model_id or not model_id.strip():
            raise InvalidRequestError("The model id is empty.", param=param)
        if "\x00" in model_id or len(model_id) > 512:
            raise InvalidRequestError("The model id is not valid.", param=param, code="invalid_model_id")
        if os.path.isabs(model_id):
            if not self.settings.allow_local_model_paths:
                raise InvalidRequestError(
                    f"Model paths are not allowed on this server: '{shorten(model_id)}'. Name a model id such as "
                    "'Systran/faster-whisper-base', or set ALLOW_LOCAL_MODEL_PATHS=true.",
                    param=param,
                    code="invalid_model_id",
                )
            if ".." in Path(model_id).parts:
                raise InvalidRequestError("A model path may not contain '..'.", param=param, code="invalid_model_id")
            return
        if not _REPO_ID.fullmatch(model_id) or ".." in model_id.split("/") or model_id.startswith("."):
            raise InvalidRequestError(
                f"'{shorten(model_id)}' is not a valid model id: use a Hugging Face repo id like "
                "'Systran/faster-whisper-base' (letters, digits, '-', '_', '.', one '/').",
                param=param,
                code="invalid_model_id",
            )

    # --- text to speech ---

    def voice_for(self, name: str) -> str:
        """The piper voice an OpenAI voice name (or a configured alias) stands for; others are voices already."""
        if name in self.settings.tts_voice_aliases:
            return self.settings.tts_voice_aliases[name]
        if name.lower() in OPENAI_VOICE_NAMES:
            return self.settings.tts_default_voice
        return name

    def aliases_of(self, voice_id: str) -> list[str]:
        """The OpenAI voice names (and configured alias names) that stand for `voice_id`."""
        aliases = self.settings.tts_voice_aliases
        names = [*OPENAI_VOICE_NAMES, *(name for name in aliases if name not in OPENAI_VOICE_NAMES)]
        return [name for name in names if self.voice_for(name) == voice_id]

    def voice(self, name: str | None) -> ModelRef:
        """A piper voice by name or alias; the default voice when none is named. 404 for a name that cannot be one."""
        voice = self.voice_for(name or self.settings.tts_default_voice)
        if not _VOICE_FILE_NAME.fullmatch(voice):
            raise ModelNotFoundError(voice, param="voice", hint=_LIST_VOICES_HINT)
        return ModelRef(Kind.TTS, voice)

    def speech_voice(self, model: str, voice: str | None) -> ModelRef:
        """The voice `POST /v1/audio/speech` speaks with.

        `model` is normally `rhasspy/piper-voices` or an alias, and `voice` picks the voice. As
        /v1/models also lists each voice, `model` may name a voice itself; then `voice` may only
        repeat it or be an OpenAI voice name, which the explicit model overrides.
        """
        if model in TTS_ALIASES or model == PIPER_REPO_ID:
            return self.voice(voice)
        if self.kind_of(model) is not Kind.TTS:
            aliases = ", ".join(f"'{alias}'" for alias in sorted(TTS_ALIASES))
            raise ModelNotFoundError(
                model, hint=f"Text to speech uses '{PIPER_REPO_ID}' (or {aliases}); choose the voice with 'voice'."
            )
        if voice and voice != model and voice.lower() not in OPENAI_VOICE_NAMES:
            raise InvalidRequestError(
                f"'model' names the voice '{shorten(model)}' but 'voice' names '{shorten(voice)}'. Set 'model' to "
                f"'{PIPER_REPO_ID}' and choose the voice with 'voice'.",
                param="voice",
            )
        return self.voice(model)

    # --- any kind (management API, PRELOAD_MODELS) ---

    def kind_of(self, name: str) -> Kind:
        """Whether a name stands for a piper voice or a whisper model, by its form (and MODELS_DIR's voice files)."""
        if name in self.settings.tts_voice_aliases or name.lower() in OPENAI_VOICE_NAMES:
            return Kind.TTS
        if name in TTS_ALIASES or name == PIPER_REPO_ID or piper_voice_path_in_repo(name) is not None:
            return Kind.TTS
        models_dir = self.settings.models_dir
        if models_dir is not None and _VOICE_FILE_NAME.fullmatch(name):
            onnx = models_dir / f"{name}.onnx"
            if onnx.is_file() and onnx.with_name(onnx.name + ".json").is_file():
                return Kind.TTS
        return Kind.STT

    def any(self, name: str, *, param: str = "model_id") -> ModelRef:
        """The model a management call or PRELOAD_MODELS names, of either kind: `whisper-1` is the default
        whisper model, `tts-1` (or `piper`, `rhasspy/piper-voices`) and OpenAI voice names the voice they
        stand for."""
        if self.kind_of(name) is Kind.TTS:
            if name in TTS_ALIASES or name == PIPER_REPO_ID:
                return self.voice(None)
            return self.voice(name)
        return self.stt(name, param=param)
