"""piper adapter: loading piper voices for the model manager."""

from __future__ import annotations

from typing import TYPE_CHECKING

from speaches.config import Settings
from speaches.errors import ApiError, ModelLoadError
from speaches.models.device import onnx_providers, resolve_device
from speaches.models.manager import LoadedModel, ModelKind
from speaches.models.sources import find_piper_voice

if TYPE_CHECKING:
    from piper import PiperVoice

TTS_KIND = "tts"


def load_piper_voice(voice: str, settings: Settings) -> LoadedModel[PiperVoice]:
    """Resolve and load a piper voice (blocking)."""
    # Imported here so an idle server that never speaks does not pay for onnxruntime.
    from piper import PiperVoice

    resolved = find_piper_voice(voice, settings)
    device = resolve_device(settings.whisper.inference_device)
    providers = onnx_providers(device)
    try:
        loaded = PiperVoice.load(resolved.path, use_cuda="CUDAExecutionProvider" in providers)
    except ApiError:
        raise
    except Exception as error:  # corrupt or incompatible files: name the voice, keep serving
        raise ModelLoadError(voice, f"{type(error).__name__}: {error}") from error
    return LoadedModel(model=loaded, device="cuda" if "CUDAExecutionProvider" in providers else "cpu")


def piper_voice_kind(settings: Settings) -> ModelKind[PiperVoice]:
    return ModelKind(
        name=TTS_KIND,
        load=lambda voice: load_piper_voice(voice, settings),
        ttl=lambda: settings.tts_model_ttl,
    )
