"""Reading spoken answers back: decode them, and hear what they say with the server's own transcription."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import av
import numpy as np
from openai import OpenAI

from speaches.audio.decoding import decode_audio
from tests.helpers import TINY_EN

PCM16_RATE = 24_000


def pcm16_to_wav(pcm: bytes, sample_rate: int = PCM16_RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def decoded_seconds(audio: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of an encoded file, decoded with PyAV."""
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


def loudness(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def heard(client: OpenAI, audio: bytes, filename: str = "answer.wav") -> str:
    """What tiny.en hears in `audio`, through /v1/audio/transcriptions."""
    return client.audio.transcriptions.create(model=TINY_EN, file=(filename, audio), response_format="text")


def b64(audio: bytes) -> str:
    return base64.b64encode(audio).decode("ascii")


def mp3_of(path: Path) -> bytes:
    """The recording as an mp3 file (a client sending mp3), encoded with the libmp3lame that PyAV's wheel
    bundles: no ffmpeg program is needed."""
    samples = decode_audio(path)
    out = io.BytesIO()
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()
