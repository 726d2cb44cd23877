"""The ears and the voice of a conversation: transcription and speech, borrowed from their capabilities.

Both go through `AppState.stream`, so the model is leased and the work runs in the inference pool
exactly as for /v1/audio/transcriptions and /v1/audio/speech; closing (a client that left) stops it
at its next segment or sentence and returns the lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from speaches.chat.protocol import ChatAudioFormat
from speaches.models.catalog import ModelRef
from speaches.speech.piper import synthesize_speech
from speaches.state import AppState
from speaches.transcription.formats import TextJoiner
from speaches.transcription.whisper import DecodeOptions, Transcription

SPEECH_FORMAT_OF: dict[ChatAudioFormat, str] = {
    "wav": "wav",
    "aac": "aac",
    "mp3": "mp3",
    "flac": "flac",
    "opus": "opus",
    "pcm16": "pcm",  # 16-bit little-endian mono at 24 kHz, OpenAI's rate for raw audio
}


async def transcribe(state: AppState, ref: ModelRef, audio: bytes, *, language: str | None = None) -> str:
    """The words in an audio file (any format the decoder reads), as one text."""
    options = DecodeOptions(task="transcribe", language=language, default_language=state.settings.default_language)
    transcription = Transcription(audio, options, state.settings.whisper, model_id=ref.id)
    segments = await state.stream(ref, transcription.segments)
    joiner = TextJoiner()
    try:
        async for segment in segments:
            joiner.add(segment.text)
    finally:
        await segments.aclose()
    return joiner.text


async def speak(
    state: AppState,
    voice: ModelRef,
    text: str,
    response_format: str,
    *,
    speed: float = 1.0,
    sample_rate: int | None = None,
) -> AsyncIterator[bytes]:
    """`text` spoken, as the pieces of one file in `response_format` (/v1/audio/speech's formats: `pcm`,
    `wav`, `mp3`, ...), each as soon as piper has its sentence."""
    chunks = await state.stream(
        voice,
        lambda model: synthesize_speech(
            model, text, response_format=response_format, speed=speed, sample_rate=sample_rate
        ),
    )
    try:
        async for chunk in chunks:
            if chunk:
                yield chunk
    finally:
        await chunks.aclose()
