"""The `info` answer to `describe`: this server's speech-to-text models and piper voices.

Home Assistant shows these in its Wyoming integration and lets a pipeline pick a model language
and a voice. Listing reads the model folders and voice configs but loads nothing (blocking: call it
from a worker thread).
"""

from __future__ import annotations

from wyoming.info import AsrModel, AsrProgram, Attribution, Info, TtsProgram, TtsVoice

from speaches import __version__
from speaches.languages import LANGUAGE_NAMES
from speaches.models.catalog import Catalog
from speaches.models.sources import list_local_whisper_models
from speaches.speech.piper import list_voices

PROGRAM_NAME = "speaches"
_PROJECT = Attribution(name="speaches", url="")


def describe_server(catalog: Catalog) -> Info:
    return Info(asr=[_speech_to_text(catalog)], tts=[_text_to_speech(catalog)])


def _speech_to_text(catalog: Catalog) -> AsrProgram:
    settings = catalog.settings
    models = [
        AsrModel(
            name=model.model_id,
            description=f"{model.model_id} (faster-whisper)",
            attribution=Attribution(name=_owner(model.model_id), url=""),
            installed=True,
            version=None,
            # Whisper's `.en` models are English only; the others know all of Whisper's languages.
            languages=["en"] if model.model_id.endswith(".en") else sorted(LANGUAGE_NAMES),
        )
        for model in list_local_whisper_models(settings)
    ]
    # A client that takes the first model (or sends no name) gets the default model.
    models.sort(key=lambda model: model.name != settings.whisper.model)
    return AsrProgram(
        name=PROGRAM_NAME,
        description="speaches speech to text (faster-whisper)",
        attribution=_PROJECT,
        installed=True,
        version=__version__,
        models=models,
        supports_transcript_streaming=True,
    )


def _text_to_speech(catalog: Catalog) -> TtsProgram:
    settings = catalog.settings
    voices = [
        TtsVoice(
            name=voice.id,
            description=f"{voice.name} ({voice.language}, {voice.quality})",
            attribution=Attribution(name="piper", url="https://github.com/OHF-Voice/piper1-gpl"),
            installed=True,
            version=None,
            languages=[voice.language],
            speakers=None,
        )
        for voice in list_voices(catalog)
    ]
    voices.sort(key=lambda voice: voice.name != settings.tts_default_voice)
    return TtsProgram(
        name=PROGRAM_NAME,
        description="speaches text to speech (piper)",
        attribution=_PROJECT,
        installed=True,
        version=__version__,
        voices=voices,
        supports_synthesize_streaming=True,
    )


def _owner(model_id: str) -> str:
    return model_id.split("/", 1)[0] if "/" in model_id else "local"
