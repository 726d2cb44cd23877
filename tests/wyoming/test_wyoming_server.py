"""The Wyoming protocol against a real server, with the `wyoming` package's own client (as Home Assistant uses it).

One server (HTTP and Wyoming on free ports) with the bundled tiny.en model and piper voice. Speech is
checked for content by transcribing it back through Wyoming itself; transcripts by word error rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, JFK_TEXT, LAMP_TEXT, TINY_EN, Server, word_error_rate

# The client fixture is opened on the session's loop (asyncio_default_fixture_loop_scope): tests run there too.
pytestmark = [pytest.mark.server, pytest.mark.asyncio(loop_scope="session")]

VOICE = "en_US-joe-medium"
VOICE_RATE = 22050
READ_TIMEOUT = 120.0
TWO_SENTENCES = "The lamp in the kitchen is on. Please turn it off before you go to bed."


@pytest.fixture
async def client(wyoming_server: Server) -> AsyncIterator[AsyncTcpClient]:
    async with AsyncTcpClient(
        "127.0.0.1", wyoming_server.wyoming_port, connect_timeout=10, read_timeout=READ_TIMEOUT
    ) as connected:
        yield connected


def pcm16(path: str) -> bytes:
    """A test recording as 16 kHz mono 16-bit PCM, what Home Assistant streams."""
    samples = decode_audio(AUDIO_DIR / path, 16000)
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


async def send_audio(client: AsyncTcpClient, pcm: bytes, rate: int = 16000, chunk_bytes: int = 3200) -> None:
    await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
    for offset in range(0, len(pcm), chunk_bytes):
        chunk = AudioChunk(rate=rate, width=2, channels=1, audio=pcm[offset : offset + chunk_bytes])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())


@dataclass
class TranscriptEvents:
    types: list[str] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    transcript: Transcript | None = None
    start: TranscriptStart | None = None


async def read_transcript(client: AsyncTcpClient) -> TranscriptEvents:
    """Every event up to transcript-stop (an error event fails the test with its text)."""
    events = TranscriptEvents()
    while True:
        event = await client.read_event()
        assert event is not None, f"the connection closed after {events.types}"
        events.types.append(event.type)
        if Error.is_type(event.type):
            pytest.fail(f"error event: {event.data}")
        if TranscriptStart.is_type(event.type):
            events.start = TranscriptStart.from_event(event)
        elif TranscriptChunk.is_type(event.type):
            events.chunks.append(TranscriptChunk.from_event(event).text)
        elif Transcript.is_type(event.type):
            events.transcript = Transcript.from_event(event)
        elif TranscriptStop.is_type(event.type):
            return events


async def transcribe(client: AsyncTcpClient, pcm: bytes, rate: int = 16000, **request: object) -> TranscriptEvents:
    await client.write_event(Transcribe(**request).event())  # type: ignore[arg-type]
    await send_audio(client, pcm, rate)
    return await read_transcript(client)


@dataclass
class Speech:
    audio: bytes
    start: AudioStart


async def read_speech(client: AsyncTcpClient) -> Speech:
    """One audio-start ... audio-stop stream."""
    start: AudioStart | None = None
    audio = bytearray()
    while True:
        event = await client.read_event()
        assert event is not None, "the connection closed mid-speech"
        if Error.is_type(event.type):
            pytest.fail(f"error event: {event.data}")
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            assert start is not None, "audio-chunk before audio-start"
            assert (chunk.rate, chunk.width, chunk.channels) == (start.rate, start.width, start.channels)
            audio += chunk.audio
        elif AudioStop.is_type(event.type):
            assert start is not None, "audio-stop before audio-start"
            return Speech(bytes(audio), start)


async def read_error(client: AsyncTcpClient) -> Error:
    event = await client.read_event()
    assert event is not None, "the server dropped the connection instead of answering an error event"
    assert Error.is_type(event.type), f"expected an error event, got {event.type}: {event.data}"
    return Error.from_event(event)


def as_16k(speech: Speech) -> bytes:
    """Piper's 22050 Hz speech resampled to 16 kHz PCM, to transcribe it back."""
    samples = np.frombuffer(speech.audio, dtype="<i2").astype(np.float32)
    positions = np.arange(0, len(samples), speech.start.rate / 16000)
    resampled = np.interp(positions, np.arange(len(samples)), samples)
    return resampled.astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


# --- describe ---


async def test_describe_lists_models_and_voices(client: AsyncTcpClient) -> None:
    await client.write_event(Describe().event())
    event = await client.read_event()
    assert event is not None
    assert Info.is_type(event.type)
    info = Info.from_event(event)
    (asr,) = info.asr
    (tts,) = info.tts
    assert asr.supports_transcript_streaming
    assert tts.supports_synthesize_streaming
    model_names = [model.name for model in asr.models]
    assert model_names[0] == TINY_EN, "the default model comes first, for clients that take the first"
    assert "Systran/faster-whisper-base" in model_names
    assert asr.models[0].languages == ["en"]
    base = next(model for model in asr.models if model.name == "Systran/faster-whisper-base")
    assert {"en", "de", "fr"} <= set(base.languages)
    voice = next(voice for voice in tts.voices if voice.name == VOICE)
    assert voice.languages == ["en_US"]
    assert voice.installed


async def test_ping(client: AsyncTcpClient) -> None:
    await client.write_event(Ping(text="hello").event())
    event = await client.read_event()
    assert event is not None
    assert Pong.is_type(event.type)
    assert Pong.from_event(event).text == "hello"


# --- speech to text ---


async def test_transcribe_jfk_streams_transcript_events(client: AsyncTcpClient) -> None:
    events = await transcribe(client, pcm16("jfk.flac"), language="en")
    assert events.types[0] == "transcript-start"
    assert events.types[-2:] == ["transcript", "transcript-stop"]
    assert events.chunks, "no transcript-chunk: the transcript was not streamed"
    assert events.transcript is not None
    assert "".join(events.chunks) == events.transcript.text
    assert events.transcript.language == "en"
    assert word_error_rate(JFK_TEXT, events.transcript.text) < 0.1, events.transcript.text


async def test_one_connection_serves_several_requests(client: AsyncTcpClient) -> None:
    lamp = pcm16("turn_on_the_living_room_lamp.wav")
    # A locale as clients send it, then no transcribe event at all (the defaults apply).
    first = await transcribe(client, lamp, language="en-US")
    await send_audio(client, lamp)
    second = await read_transcript(client)
    for events in (first, second):
        assert events.transcript is not None
        assert word_error_rate(LAMP_TEXT, events.transcript.text) < 0.2, events.transcript.text


async def test_audio_at_another_rate_is_resampled(client: AsyncTcpClient) -> None:
    pcm = pcm16("turn_on_the_living_room_lamp.wav")
    samples = np.frombuffer(pcm, dtype="<i2")
    upsampled = np.interp(np.arange(0, len(samples), 16000 / 44100), np.arange(len(samples)), samples)
    events = await transcribe(client, upsampled.astype("<i2").tobytes(), rate=44100, name=TINY_EN)
    assert events.transcript is not None
    assert word_error_rate(LAMP_TEXT, events.transcript.text) < 0.2, events.transcript.text


async def test_empty_audio_gives_an_empty_transcript(client: AsyncTcpClient) -> None:
    events = await transcribe(client, b"")
    assert events.transcript is not None
    assert events.transcript.text == ""


# --- text to speech ---


async def test_synthesize_speaks_the_text(client: AsyncTcpClient) -> None:
    await client.write_event(Synthesize(text=LAMP_TEXT, voice=SynthesizeVoice(name=VOICE)).event())
    speech = await read_speech(client)
    assert (speech.start.rate, speech.start.width, speech.start.channels) == (VOICE_RATE, 2, 1)
    seconds = len(speech.audio) / (2 * VOICE_RATE)
    assert 1.0 < seconds < 5.0, seconds
    assert rms(speech.audio) > 0.02, "the audio is (nearly) silent"
    heard = await transcribe(client, as_16k(speech), language="en")
    assert heard.transcript is not None
    assert word_error_rate(LAMP_TEXT, heard.transcript.text) < 0.3, heard.transcript.text


async def test_synthesize_openai_voice_name_and_language(client: AsyncTcpClient) -> None:
    for voice in (SynthesizeVoice(name="alloy"), SynthesizeVoice(language="en-US"), None):
        await client.write_event(Synthesize(text="Hello there.", voice=voice).event())
        speech = await read_speech(client)
        assert speech.start.rate == VOICE_RATE
        assert rms(speech.audio) > 0.02


async def test_streaming_synthesis_speaks_each_sentence_as_it_arrives(client: AsyncTcpClient) -> None:
    # A first sentence both models hear word for word from this voice (bench/accuracy_audio.py checks it): "The
    # lamp in the kitchen is on." came back as "the lap and the catching is on." in two runs of many.
    first, second = "I left my keys on the kitchen table.", " Please turn it off before you go to bed."
    await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
    for word in first.split(" "):
        await client.write_event(SynthesizeChunk(text=word + " ").event())
    # The first sentence is complete: its audio must come before the rest of the text is even sent.
    first_speech = await read_speech(client)
    for word in second.split(" "):
        await client.write_event(SynthesizeChunk(text=" " + word).event())
    # Clients also send the whole text as `synthesize`, for servers without streaming: not spoken twice.
    await client.write_event(Synthesize(text=first + second, voice=SynthesizeVoice(name=VOICE)).event())
    await client.write_event(SynthesizeStop().event())
    second_speech = await read_speech(client)
    event = await client.read_event()
    assert event is not None
    assert SynthesizeStopped.is_type(event.type), event.type
    for speech, text in ((first_speech, first), (second_speech, second)):
        assert speech.start.rate == VOICE_RATE
        heard = await transcribe(client, as_16k(speech), language="en")
        assert heard.transcript is not None
        assert word_error_rate(text, heard.transcript.text) < 0.35, (text, heard.transcript.text)


# --- bad input: answered with an error event, and the connection keeps working ---


async def assert_still_serves(client: AsyncTcpClient) -> None:
    await client.write_event(Ping(text="still there?").event())
    event = await client.read_event()
    assert event is not None
    assert Pong.is_type(event.type), event.type


async def test_unknown_voice_is_an_error_event(client: AsyncTcpClient) -> None:
    await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name="xx_XX-nobody-low")).event())
    error = await read_error(client)
    assert error.code == "voice_not_found"
    assert "xx_XX-nobody-low" in error.text
    await assert_still_serves(client)
    # The same in a stream: the error at synthesize-start, then its chunks are ignored and stop ends it.
    await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="xx_XX-nobody-low")).event())
    assert (await read_error(client)).code == "voice_not_found"
    await client.write_event(SynthesizeChunk(text="Hello there. ").event())
    await client.write_event(SynthesizeStop().event())
    event = await client.read_event()
    assert event is not None
    assert SynthesizeStopped.is_type(event.type), event.type
    await assert_still_serves(client)


async def test_unknown_model_is_an_error_event(client: AsyncTcpClient) -> None:
    await client.write_event(Transcribe(name="Systran/faster-whisper-nonexistent").event())
    await send_audio(client, pcm16("turn_on_the_living_room_lamp.wav"))
    error = await read_error(client)
    assert error.code == "model_not_found"
    await assert_still_serves(client)
    await client.write_event(Transcribe(name="../../etc/passwd").event())
    assert (await read_error(client)).code == "invalid_model_id"
    await send_audio(client, pcm16("turn_on_the_living_room_lamp.wav"))  # ignored: its request failed
    await assert_still_serves(client)


async def test_bad_requests_are_error_events(client: AsyncTcpClient) -> None:
    cases = [
        Event(type="synthesize", data={}),  # no text
        Synthesize(text="   ").event(),
        Synthesize(text="... -").event(),  # nothing to speak
        Synthesize(text="word " * 2000).event(),
        Transcribe(language="klingon").event(),
        Event(type="audio-start", data={"rate": 16000, "width": 2}),  # no channels
        Event(type="audio-start", data={"rate": 16000, "width": 1, "channels": 1}),
        Event(type="synthesize-chunk", data={"text": "no stream started"}),
    ]
    for event in cases:
        await client.write_event(event)
        error = await read_error(client)
        assert error.text, event
    await assert_still_serves(client)


async def test_audio_format_changing_mid_stream_is_an_error(client: AsyncTcpClient) -> None:
    await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
    await client.write_event(AudioChunk(rate=8000, width=2, channels=1, audio=b"\0\0" * 800).event())
    error = await read_error(client)
    assert "format" in error.text
    await client.write_event(AudioStop().event())  # ends the failed request without another answer
    await assert_still_serves(client)


async def wait_until_released(server: Server, model_id: str) -> None:
    """Until /api/ps shows no lease on `model_id` (a minute at most)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            loaded = (await http.get(f"{server.url}/api/ps")).json()["models"]
            model = next(entry for entry in loaded if entry["id"] == model_id)
            if model["ref_count"] == 0:
                return
            assert time.monotonic() < deadline, f"{model_id} is still leased after the client left: {model}"
            await asyncio.sleep(0.2)


async def test_client_that_leaves_mid_speech_gives_back_the_voice(wyoming_server: Server) -> None:
    client = AsyncTcpClient("127.0.0.1", wyoming_server.wyoming_port, read_timeout=READ_TIMEOUT)
    await client.connect()
    await client.write_event(Synthesize(text=" ".join([TWO_SENTENCES] * 20)).event())
    event = await client.read_event()
    assert event is not None
    assert AudioStart.is_type(event.type)
    await client.disconnect()
    await wait_until_released(wyoming_server, VOICE)
    assert "stopped after" in wyoming_server.logs(), "the synthesis did not stop when the client left"


async def test_client_that_leaves_mid_transcription_gives_back_the_model(wyoming_server: Server) -> None:
    client = AsyncTcpClient("127.0.0.1", wyoming_server.wyoming_port, read_timeout=READ_TIMEOUT)
    await client.connect()
    long_audio = pcm16("jfk.flac") * 12  # over two minutes: many segments
    await client.write_event(Transcribe(name=TINY_EN).event())
    await send_audio(client, long_audio)
    event = await client.read_event()
    assert event is not None
    assert TranscriptStart.is_type(event.type), event.type
    await client.disconnect()
    await wait_until_released(wyoming_server, TINY_EN)
    await asyncio.sleep(1)
    whole = f"transcribed {len(long_audio) / 32000:.1f} s of audio"
    assert whole not in wyoming_server.logs(), "the whole transcription ran on after the client left"


async def test_a_language_the_model_does_not_know_is_an_error_event(client: AsyncTcpClient) -> None:
    await client.write_event(Transcribe(name=TINY_EN, language="de").event())
    await send_audio(client, pcm16("living_room_light_de.wav"))
    error = await read_error(client)
    assert error.code == "unsupported_language", error
    await assert_still_serves(client)


async def test_wyoming_requests_are_counted_in_metrics(wyoming_server: Server) -> None:
    """Runs last in this module: the requests above are what it counts."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{wyoming_server.url}/metrics")).text
    counted = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("speaches_wyoming_requests_total", "speaches_audio_seconds_total"))
    }
    assert counted['speaches_wyoming_requests_total{kind="transcribe",outcome="ok"}'] >= 1
    assert counted['speaches_wyoming_requests_total{kind="synthesize",outcome="ok"}'] >= 1
    assert counted['speaches_wyoming_requests_total{kind="synthesize",outcome="error"}'] >= 1
    assert counted['speaches_audio_seconds_total{kind="transcription"}'] > 10
    assert counted['speaches_audio_seconds_total{kind="speech"}'] > 1
