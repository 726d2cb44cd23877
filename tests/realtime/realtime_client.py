"""Helpers for driving Realtime sessions with the official openai SDK (shared by the tests and bench/realtime.py)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from openai import AsyncOpenAI

from speaches.audio.decoding import decode_audio

RATE = 24_000


def pcm_at(path: Path | np.ndarray, rate: int = RATE) -> bytes:
    """PCM16 little-endian mono at `rate` of an audio file (or of 16 kHz float samples)."""
    samples = resampled(path, 16000, rate) if isinstance(path, np.ndarray) else decode_audio(path, rate)
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def resampled(samples: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    if source_rate == rate:
        return samples
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = source_rate
    out = [f.to_ndarray()[0] for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out)


def g711(path: Path, codec: str) -> bytes:
    """The file as 8 kHz G.711 (`pcm_mulaw` or `pcm_alaw`), encoded by ffmpeg's encoder."""
    samples = decode_audio(path, 8000)
    encoder = av.CodecContext.create(codec, "w")
    encoder.sample_rate = 8000
    encoder.layout = "mono"
    encoder.format = "s16"
    frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(2 * round(seconds * rate))


def b64(chunk: bytes) -> str:
    return base64.b64encode(chunk).decode()


def sdk(server_url: str, api_key: str = "not-needed") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server_url}/v1", api_key=api_key, max_retries=0)


@dataclass
class Events:
    """Server events in arrival order, with their arrival times (time.monotonic())."""

    items: list[Any] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def of(self, kind: str) -> list[Any]:
        return [event for event in self.items if event.type == kind]

    def index(self, kind: str, **match: Any) -> int:
        for position, event in enumerate(self.items):
            if event.type == kind and all(getattr(event, key) == value for key, value in match.items()):
                return position
        raise AssertionError(f"no {kind} {match} in {[e.type for e in self.items]}")

    def transcripts(self) -> list[str]:
        return [event.transcript for event in self.of("conversation.item.input_audio_transcription.completed")]


async def collect(connection: Any, events: Events, until: Callable[[Events], bool], limit: float = 120.0) -> Events:
    """Receive events into `events` until `until(events)` holds (or the connection closes)."""
    async with asyncio.timeout(limit):
        async for event in connection:
            events.items.append(event)
            events.times.append(time.monotonic())
            if until(events):
                break
    return events


async def append_paced(
    connection: Any,
    pcm: bytes,
    *,
    speed: float,
    chunk_bytes: int = 4800,
    rate: int = RATE,
    bytes_per_sample: int = 2,
    sent_at: list[float] | None = None,
    event_type: str = "input_audio_buffer.append",
) -> None:
    """Append `pcm` in chunks (100 ms of 24 kHz PCM16 by default), each once its audio would have been recorded."""
    seconds_per_chunk = chunk_bytes / bytes_per_sample / rate
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), chunk_bytes)):
        due = started + (index + 1) * seconds_per_chunk / speed
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await connection.send({"type": event_type, "audio": b64(pcm[offset : offset + chunk_bytes])})
        if sent_at is not None:
            sent_at.append(time.monotonic())
