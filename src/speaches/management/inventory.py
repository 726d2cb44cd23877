"""The models this server has without a download, as OpenAI model objects (blocking: call from a thread).

Listed are whisper models (bundled, in the Hugging Face cache, under MODELS_DIR) and, for text to
speech, `rhasspy/piper-voices` (the `model` of /v1/audio/speech) with each piper voice here.
"""

from __future__ import annotations

from speaches.config import Settings
from speaches.management.protocol import ModelObject
from speaches.models.catalog import PIPER_REPO_ID, Kind, ModelRef, owner_of
from speaches.models.sources import LocalModel, list_local_piper_voices, list_local_whisper_models


def local_models(settings: Settings) -> list[ModelObject]:
    whisper = [_model_object(model) for model in list_local_whisper_models(settings)]
    voices = [_model_object(model) for model in list_local_piper_voices(settings)]
    tts: list[ModelObject] = []
    if voices:
        tts.append(
            ModelObject(
                id=PIPER_REPO_ID,
                created=max(voice.created for voice in voices),
                owned_by=owner_of(ModelRef(Kind.TTS, PIPER_REPO_ID)),
                kind=Kind.TTS,
            )
        )
    return whisper + tts + voices


def _model_object(model: LocalModel) -> ModelObject:
    ref = ModelRef(model.kind, model.model_id)
    return ModelObject(
        id=model.model_id, created=model.created, owned_by=owner_of(ref), kind=model.kind, source=model.source
    )
