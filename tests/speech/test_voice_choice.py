"""Which voice a speech request gets: OpenAI voice names, configured aliases, a voice named as the model."""

from __future__ import annotations

from typing import Any

import pytest

from speaches.config import Settings
from speaches.errors import InvalidRequestError, ModelNotFoundError
from speaches.models.catalog import OPENAI_VOICE_NAMES, Catalog
from speaches.speech.protocol import CreateSpeechRequest


def settings(**fields: Any) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


def request(**fields: Any) -> CreateSpeechRequest:
    return CreateSpeechRequest.model_validate({"input": "hi", **fields})


def resolve_voice(speech: CreateSpeechRequest, config: Settings) -> str:
    """The voice the catalog picks for a speech request, as the route resolves it."""
    return Catalog(config).speech_voice(speech.model, speech.voice_name).id


def aliases_of(voice_id: str, config: Settings) -> list[str]:
    return Catalog(config).aliases_of(voice_id)


def test_openai_voice_names_map_to_the_default_or_a_configured_voice() -> None:
    config = settings(tts_default_voice="en_US-amy-medium", tts_voice_aliases={"nova": "en_GB-alan-low"})
    assert resolve_voice(request(model="tts-1", voice="alloy"), config) == "en_US-amy-medium"
    assert resolve_voice(request(model="tts-1-hd", voice="nova"), config) == "en_GB-alan-low"
    assert resolve_voice(request(model="piper"), config) == "en_US-amy-medium"
    assert resolve_voice(request(voice={"id": "de_DE-thorsten-high"}), config) == "de_DE-thorsten-high"
    assert resolve_voice(request(model="en_US-joe-medium", voice="shimmer"), config) == "en_US-joe-medium"
    assert aliases_of("en_GB-alan-low", config) == ["nova"]
    assert set(aliases_of("en_US-amy-medium", config)) == set(OPENAI_VOICE_NAMES) - {"nova"}


def test_a_model_that_is_not_text_to_speech_is_not_found() -> None:
    with pytest.raises(ModelNotFoundError) as raised:
        resolve_voice(request(model="whisper-1"), settings())
    assert raised.value.status_code == 404
    assert "rhasspy/piper-voices" in raised.value.message


def test_a_voice_model_and_another_voice_conflict() -> None:
    with pytest.raises(InvalidRequestError):
        resolve_voice(request(model="en_US-joe-medium", voice="en_US-amy-medium"), settings())
