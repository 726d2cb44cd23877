"""Every speech format opens in libsndfile (Python's `soundfile`), read whole, streamed or not.

libsndfile is what much of the audio world reads files with; it trusts a file's declared length, so
a flac saying "total samples unknown" fails there ("array is too big"). Each format it can read is
read whole, from the plain response and from the base64 deltas of `stream_format=sse`, and must
hold the speech: as long as the wav of the same text, within piper's noise and codec padding.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from openai import OpenAI

from tests.helpers import Server

pytestmark = pytest.mark.server

TEXT = "The weather is lovely today, so we will walk to the park after lunch. Bring a coat."
VOICE_RATE = 22050
PCM_RATE = 24000
# piper's noise moves durations by a few percent; mp3 and opus add up to ~0.1 s of priming and padding.
DURATION_TOLERANCE = 0.12
# libsndfile reads every response format but raw ADTS aac (it has no AAC decoder at all).
READABLE = ["mp3", "opus", "flac", "wav", "pcm"]
SOUNDFILE_FORMAT = {"mp3": "MP3", "opus": "OGG", "flac": "FLAC", "wav": "WAV", "pcm": "RAW"}


def read_whole(data: bytes, response_format: str) -> tuple[np.ndarray, int]:
    if response_format == "pcm":  # headerless: libsndfile reads it when told what it is
        return soundfile.read(io.BytesIO(data), samplerate=PCM_RATE, channels=1, subtype="PCM_16", format="RAW")
    return soundfile.read(io.BytesIO(data))


@pytest.fixture(scope="module")
def wav_seconds(client: OpenAI) -> float:
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav").content
    info = soundfile.info(io.BytesIO(wav))
    return float(info.frames / info.samplerate)


def test_libsndfile_reads_every_format_but_aac() -> None:
    available = soundfile.available_formats()
    assert all(SOUNDFILE_FORMAT[fmt] in available for fmt in READABLE)
    assert not {"AAC", "ADTS"} & set(available), "if libsndfile learns aac, test it here too"


@pytest.mark.parametrize("response_format", READABLE)
def test_soundfile_reads_the_response_whole(client: OpenAI, response_format: str, wav_seconds: float) -> None:
    data = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=response_format).content  # type: ignore[arg-type]

    samples, rate = read_whole(data, response_format)

    assert rate == (PCM_RATE if response_format in ("pcm", "opus") else VOICE_RATE)
    assert samples.ndim == 1
    assert abs(len(samples) / rate - wav_seconds) <= DURATION_TOLERANCE * wav_seconds
    assert np.abs(samples).max() > 0.1, "the audio is silent"


@pytest.mark.parametrize("response_format", READABLE)
def test_soundfile_reads_the_sse_deltas_joined(server: Server, response_format: str, wav_seconds: float) -> None:
    body = {"model": "tts-1", "input": TEXT, "response_format": response_format, "stream_format": "sse"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line]
    audio = b"".join(base64.b64decode(event["audio"]) for event in events if event["type"] == "speech.audio.delta")

    samples, rate = read_whole(audio, response_format)

    assert abs(len(samples) / rate - wav_seconds) <= DURATION_TOLERANCE * wav_seconds


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
def test_flac_declares_its_exact_length(server: Server, stream_format: str) -> None:
    body: dict[str, Any] = {"model": "tts-1", "input": TEXT, "response_format": "flac", "stream_format": stream_format}
    response = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120)
    data = response.content
    if stream_format == "sse":
        events = [json.loads(line.removeprefix("data: ")) for line in response.text.splitlines() if line]
        data = b"".join(base64.b64decode(event["audio"]) for event in events if event["type"] == "speech.audio.delta")

    info = soundfile.info(io.BytesIO(data))
    samples, _rate = soundfile.read(io.BytesIO(data))

    assert info.frames == len(samples) > VOICE_RATE, "STREAMINFO's total is the real number of samples"
