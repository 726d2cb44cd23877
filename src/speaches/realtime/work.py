"""What both kinds of Realtime session share: the outbox of server events, the audio intake, model names.

Nothing here touches the socket: a session puts its server events in an `Outbox`, and the connection
(realtime/connection.py) sends them on in order. The outbox is bounded, so a client that stops reading holds
back the session (and, through it, the receive loop and TCP) instead of filling memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np

from speaches.errors import ApiError
from speaches.languages import language_for_model
from speaches.models.catalog import Catalog, ModelRef
from speaches.realtime.audio_input import InputDecoder, InputFormat
from speaches.realtime.protocol import EventError
from speaches.realtime.vad import SpeechProbabilities

P = ParamSpec("P")
T = TypeVar("T")

OUTBOX_EVENTS = 256

# Decoding appends (base64, G.711, resampling, VAD) and parsing large events: small, frequent jobs that must
# neither block the event loop nor wait behind a transcription step in the inference pool.
_AUDIO_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="realtime-audio")


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a short blocking job (decoding, parsing) in the realtime audio threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_AUDIO_WORKERS, functools.partial(fn, *args, **kwargs))


class Outbox:
    """The session's server events, in order; `close()` ends the stream after what is queued."""

    def __init__(self, size: int = OUTBOX_EVENTS) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(size)

    async def put(self, event: dict[str, Any]) -> None:
        await self._queue.put(event)

    async def close(self) -> None:
        await self._queue.put(None)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while (event := await self._queue.get()) is not None:
            yield event


@dataclass
class Intake:
    """Audio as it arrives: 16 kHz samples, and (with server VAD) their speech probabilities."""

    samples: np.ndarray
    probabilities: np.ndarray
    first_window: int
    """The stream index of the first window the probabilities score."""


class AudioIntake:
    """One session's input stream, decoded in order (call `take` from one job at a time)."""

    def __init__(self, input_format: InputFormat, *, with_vad: bool) -> None:
        self.decoder = InputDecoder(input_format)
        self.vad = SpeechProbabilities() if with_vad else None

    def take(self, audio_base64: str) -> Intake:
        """Blocking: decode one append's audio."""
        return self.scored(self.decoder.decode(decode_base64(audio_base64)))

    def flush(self) -> Intake:
        return self.scored(self.decoder.flush())

    def scored(self, samples: np.ndarray) -> Intake:
        if self.vad is None:
            return Intake(samples, np.zeros(0, dtype=np.float32), 0)
        first = self.vad.windows
        return Intake(samples, self.vad.process(samples), first)


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EventError(
            "The audio is not valid base64. Send the audio bytes base64-encoded in 'audio'.",
            param="audio",
            code="invalid_value",
        ) from None


def realtime_model(requested: str | None, catalog: Catalog, *, param: str = "model") -> ModelRef:
    """The whisper model a Realtime session's model name means: OpenAI's own names (`gpt-4o-transcribe`,
    `gpt-realtime`, `whisper-1`, ...) stand for this server's default speech-to-text model."""
    if requested and "/" not in requested and requested.startswith("gpt-"):
        requested = None
    try:
        return catalog.stt(requested, param=param)
    except ApiError as error:
        raise EventError(error.message, param=param, code=error.code) from None


def checked_language(
    language: str | None, supported: list[str], model: ModelRef, *, default: str | None, param: str
) -> str | None:
    """The language to decode in, by the server's one language rule (codes or English names, known to the
    model; the default where the model knows it). Raises EventError naming `param`."""
    try:
        return language_for_model(language, supported, model_id=model.id, default=default)
    except ApiError as error:
        raise EventError(error.message, param=param, code=error.code) from None
