"""faster-whisper adapter: loading whisper models for the model manager."""

from __future__ import annotations

from typing import TYPE_CHECKING

from speaches.config import Settings
from speaches.errors import ApiError, ModelLoadError
from speaches.models.device import resolve_compute_type, resolve_device
from speaches.models.manager import LoadedModel, ModelKind
from speaches.models.sources import find_whisper_model, resolve_stt_alias

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

STT_KIND = "stt"


def load_whisper_model(model_id: str, settings: Settings) -> LoadedModel[WhisperModel]:
    """Resolve and load a whisper model (blocking). `model_id` is already alias-resolved."""
    # Imported here so an idle server that never transcribes does not pay for CTranslate2.
    from faster_whisper import WhisperModel

    resolved = find_whisper_model(model_id, settings)
    device = resolve_device(settings.whisper.inference_device)
    compute_type = resolve_compute_type(settings.whisper.compute_type, device)
    try:
        model = WhisperModel(
            str(resolved.path),
            device=device,
            device_index=settings.whisper.device_index,
            compute_type=compute_type,
            cpu_threads=settings.whisper.cpu_threads,
            num_workers=settings.whisper.num_workers,
        )
    except ApiError:
        raise
    except Exception as error:  # corrupt or incompatible files: name the model, keep serving
        raise ModelLoadError(model_id, f"{type(error).__name__}: {error}") from error
    return LoadedModel(model=model, device=device)


def unload_whisper_model(model: WhisperModel) -> None:
    # CTranslate2 frees its weights (host and GPU) here, even while Python references linger.
    model.model.unload_model()


def whisper_model_kind(settings: Settings) -> ModelKind[WhisperModel]:
    return ModelKind(
        name=STT_KIND,
        load=lambda model_id: load_whisper_model(model_id, settings),
        ttl=lambda: settings.stt_model_ttl,
        unload=unload_whisper_model,
    )


def stt_model_id(requested: str | None, settings: Settings) -> str:
    """The model a request means: `whisper-1` and an empty name both stand for the default model."""
    return resolve_stt_alias(requested or settings.whisper.model, settings)
