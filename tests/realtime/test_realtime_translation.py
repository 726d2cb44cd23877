"""Realtime translation sessions through the official openai SDK (`client.realtime.translations.connect`)
against a real server: the French and German clips in, English text and English speech out."""

from __future__ import annotations

import asyncio
import base64
import io
import wave
from typing import Any

import pytest
from openai import OpenAI

from tests.helpers import (
    AUDIO_DIR,
    BASE,
    FRENCH_TEXT,
    FRENCH_TRANSLATION,
    GERMAN_TEXT,
    TINY_EN,
    Server,
    word_error_rate,
)
from tests.realtime.realtime_client import Events, append_paced, collect, pcm_at, sdk, silence

GERMAN_TRANSLATION = "Turn on the living room light."


def wav_of(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(pcm)
    return out.getvalue()


def closed(events: Events) -> bool:
    return bool(events.of("session.closed"))


async def translate(server: Server, pcm: bytes, session: dict[str, Any] | None = None) -> Events:
    events = Events()
    async with sdk(server.url).realtime.translations.connect(model=BASE) as connection:
        if session is not None:
            await connection.send({"type": "session.update", "session": session})
        # 200 ms frames, as the API asks, four times faster than real time; then flush and close.
        await append_paced(connection, pcm, speed=4.0, chunk_bytes=9600, event_type="session.input_audio_buffer.append")
        await connection.send({"type": "session.close"})
        await collect(connection, events, closed, limit=180)
    return events


@pytest.mark.parametrize(
    ("clip", "source_text", "english"),
    [
        ("whats_your_name_french.wav", FRENCH_TEXT, FRENCH_TRANSLATION),
        ("living_room_light_de.wav", GERMAN_TEXT, GERMAN_TRANSLATION),
    ],
)
async def test_speech_is_translated_into_english_text_and_speech(
    server: Server, client: OpenAI, clip: str, source_text: str, english: str
) -> None:
    pcm = pcm_at(AUDIO_DIR / clip) + silence(1.0)
    events = await translate(
        server,
        pcm,
        {"audio": {"input": {"transcription": {"model": BASE}}, "output": {"language": "en"}}},
    )
    assert not events.of("error"), events.of("error")
    created = events.of("session.created")[0]
    assert (created.session.type, created.session.model) == ("translation", BASE)
    assert events.of("session.updated")[0].session.audio.input.transcription.model == BASE
    translated = "".join(event.delta for event in events.of("session.output_transcript.delta"))
    assert word_error_rate(english, translated) <= 0.4, translated
    heard = "".join(event.delta for event in events.of("session.input_transcript.delta"))
    assert word_error_rate(source_text, heard) <= 0.5, heard
    assert all(event.elapsed_ms % 200 == 0 for event in events.of("session.output_transcript.delta"))
    # The English is spoken: PCM16 at 24 kHz that says what the transcript says.
    audio_events = events.of("session.output_audio.delta")
    assert audio_events
    assert {(e.sample_rate, e.channels, e.format) for e in audio_events} == {(24000, 1, "pcm16")}
    speech = b"".join(base64.b64decode(event.delta) for event in audio_events)
    assert len(speech) > 24000  # at least half a second
    # Heard back by base, not tiny.en: tiny.en hears piper's "How do you call yourself?" as "Happy you
    # call yourself." about one time in twenty (piper's noise varies each rendering); base, 0 in 20.
    heard_back = await asyncio.to_thread(
        client.audio.transcriptions.create, model=BASE, file=("speech.wav", wav_of(speech, 24000)), language="en"
    )
    assert word_error_rate(translated, heard_back.text) <= 0.3, (translated, heard_back.text)
    # session.closed is the last event, after every delta.
    assert events.items[-1].type == "session.closed"


async def test_a_target_language_whisper_cannot_reach_is_an_error_event(server: Server) -> None:
    pcm = pcm_at(AUDIO_DIR / "whats_your_name_french.wav") + silence(1.0)
    events = await translate(server, pcm, {"audio": {"output": {"language": "fr"}}})
    [error] = events.of("error")
    assert (error.error.code, error.error.param) == ("unsupported_language", "session.audio.output.language")
    assert "English" in error.error.message
    # The session went on, translating into English.
    translated = "".join(event.delta for event in events.of("session.output_transcript.delta"))
    assert word_error_rate(FRENCH_TRANSLATION, translated) <= 0.4, translated


async def test_an_english_only_model_cannot_translate(server: Server) -> None:
    events = Events()
    async with sdk(server.url).realtime.translations.connect(model=TINY_EN) as connection:
        await collect(connection, events, lambda e: bool(e.of("error")), limit=60)
    [error] = events.of("error")
    assert (error.error.code, error.error.param) == ("model_cannot_translate", "model")
