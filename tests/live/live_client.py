"""A real WebSocket client for live transcription, shared by the live tests and bench/live.py.

It streams PCM the way a recorder would: frame i (audio up to (i + 1) * frame_seconds) is sent once that
much time has passed, divided by `speed` (4.0 streams four times faster than real time). Every frame's send
time and every message's arrival time are kept, so callers can measure latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from speaches.audio.decoding import decode_audio

SAMPLE_RATE = 16_000
FRAME_SECONDS = 0.1


def pcm_of(path: Path, *, start_seconds: float = 0.0, end_seconds: float | None = None) -> bytes:
    """16 kHz mono int16 little-endian PCM of an audio file (optionally a slice of it)."""
    samples = decode_audio(path)
    first = round(start_seconds * SAMPLE_RATE)
    last = None if end_seconds is None else round(end_seconds * SAMPLE_RATE)
    return float_to_pcm(samples[first:last])


def float_to_pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * SAMPLE_RATE))


def live_url(server_url: str, **query: str) -> str:
    return server_url.replace("http://", "ws://", 1) + "/v1/audio/transcriptions?" + urlencode(query)


@dataclass
class LiveResult:
    messages: list[Any] = field(default_factory=list)
    """Decoded messages in arrival order (dicts for JSON frames, str for plain text frames)."""
    received_at: list[float] = field(default_factory=list)
    """time.monotonic() at each message's arrival."""
    frame_sent_at: list[float] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and m.get("type") == kind]

    @property
    def deltas(self) -> list[dict[str, Any]]:
        return self.of_type("transcript.text.delta")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.of_type("error")

    @property
    def final_text(self) -> str | None:
        done = self.of_type("transcript.text.done")
        return done[-1]["text"] if done else None


async def receive_all(ws: ClientConnection, result: LiveResult) -> None:
    try:
        async for raw in ws:
            result.received_at.append(time.monotonic())
            text = raw if isinstance(raw, str) else raw.decode()
            try:
                result.messages.append(json.loads(text))
            except ValueError:
                result.messages.append(text)
    except ConnectionClosed:
        pass
    result.close_code = ws.close_code
    result.close_reason = ws.close_reason or ""


async def send_paced(
    ws: ClientConnection, pcm: bytes, *, speed: float, frame_bytes: int, result: LiveResult | None = None
) -> None:
    """Send `pcm` in frames of `frame_bytes`, each once its audio would have been recorded (over `speed`)."""
    frame_seconds = frame_bytes / 2 / SAMPLE_RATE
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), frame_bytes)):
        due = started + (index + 1) * frame_seconds / speed
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await ws.send(pcm[offset : offset + frame_bytes])
        if result is not None:
            result.frame_sent_at.append(time.monotonic())


async def stream(
    url: str,
    pcm: bytes,
    *,
    speed: float = 1.0,
    frame_bytes: int = round(FRAME_SECONDS * SAMPLE_RATE) * 2,
    headers: dict[str, str] | None = None,
    time_limit: float = 120.0,
) -> LiveResult:
    """One whole session: stream `pcm` paced, send `end`, and collect everything until the server closes."""
    result = LiveResult()
    async with asyncio.timeout(time_limit), connect(url, additional_headers=headers, max_size=None) as ws:
        receiver = asyncio.create_task(receive_all(ws, result))
        try:
            await send_paced(ws, pcm, speed=speed, frame_bytes=frame_bytes, result=result)
            await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass
        await receiver
    return result


async def eventually(condition: Callable[[], bool], limit_seconds: float = 60.0, what: str = "the condition") -> None:
    """Wait until `condition()` holds, checking every 10 ms; fail after `limit_seconds`."""
    for _ in range(int(limit_seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not hold within {limit_seconds:g} s")


async def eventually_async(
    check: Callable[[], Awaitable[bool]], limit_seconds: float = 60.0, what: str = "the condition"
) -> None:
    """Wait until `await check()` is true, checking every 50 ms; fail after `limit_seconds`."""
    for _ in range(int(limit_seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not hold within {limit_seconds:g} s")
