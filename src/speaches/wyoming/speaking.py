"""Text to speech over Wyoming: `synthesize`, and streaming synthesis as an LLM writes its reply.

`synthesize` -> `audio-start`, `audio-chunk`..., `audio-stop`, synthesized one sentence at a time.
Streaming: `synthesize-start`, `synthesize-chunk`..., `synthesize-stop`; each sentence is spoken as
soon as its text is complete, as its own `audio-start`...`audio-stop`, and `synthesize-stopped` ends
the reply. The `synthesize` that clients also send inside a stream, for servers without streaming,
is ignored there. Audio is 16-bit mono PCM at the voice's own rate, made by the HTTP API's
`synthesize_speech` through `AppState.stream`, one pool job per sentence: a stream waiting for its
next words holds no inference capacity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from speaches.errors import InvalidRequestError, ModelNotFoundError
from speaches.models.catalog import ModelRef
from speaches.models.manager import Lease
from speaches.speech.piper import list_voices, synthesize_speech
from speaches.state import AppState
from speaches.wyoming import metrics
from speaches.wyoming.framing import parse
from speaches.wyoming.sentences import SentenceSplitter, split_sentences

Send = Callable[[Event], Awaitable[None]]

EVENTS = frozenset({"synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop"})
# Audio goes out in chunks of this many samples (~46 ms at 22050 Hz), as piper's own Wyoming server
# sends it, so a player can start at once.
SAMPLES_PER_CHUNK = 1024
# Longest piece of text synthesized at once; longer sentences are cut at a space.
MAX_SENTENCE_CHARS = 400


@dataclass
class _Stream:
    """One streaming synthesis, from `synthesize-start` to `synthesize-stop`."""

    ref: ModelRef | None = None
    lease: Lease[Any] | None = None
    """Held for the whole stream, so the voice stays loaded between sentences whatever its TTL."""
    splitter: SentenceSplitter = field(default_factory=lambda: SentenceSplitter(MAX_SENTENCE_CHARS))
    failed: bool = False
    """An error was answered: the rest of its chunks are ignored; `synthesize-stop` still ends it."""

    def abandon(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None


class TextToSpeech:
    def __init__(self, state: AppState, send: Send) -> None:
        self.state = state
        self._send = send
        self._stream: _Stream | None = None

    async def handle(self, event: Event) -> None:
        if Synthesize.is_type(event.type):
            if self._stream is None:  # inside a stream it only repeats the streamed text for older servers
                await self._synthesize(parse(Synthesize, event))
        elif SynthesizeStart.is_type(event.type):
            await self._stream_start(parse(SynthesizeStart, event))
        elif SynthesizeChunk.is_type(event.type):
            await self._stream_chunk(parse(SynthesizeChunk, event))
        elif SynthesizeStop.is_type(event.type):
            await self._stream_stop()

    def fail(self, event_type: str) -> None:
        streaming = event_type != "synthesize"
        if streaming and self._stream is not None:
            self._stream.abandon()
            self._stream.failed = True
            if event_type == "synthesize-stop":
                self._stream = None
        metrics.record_request("synthesize_stream" if streaming else "synthesize", "error")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.abandon()
            self._stream = None

    # --- one text ---

    async def _synthesize(self, synthesize: Synthesize) -> None:
        text = _text_to_speak(synthesize.text, self.state.settings.tts_max_input_chars)
        ref = await self._voice(synthesize.voice)
        # The request's lease keeps the voice loaded between sentences; each sentence's job takes its own.
        async with self.state.models.use(ref) as lease:
            rate = int(lease.model.config.sample_rate)
            started = False
            for sentence in split_sentences(text, MAX_SENTENCE_CHARS):
                started = await self._speak(ref, rate, sentence, started=started)
        if not started:
            raise InvalidRequestError("The text has nothing to speak: it holds only punctuation or symbols.")
        await self._send(AudioStop().event())
        metrics.record_request("synthesize", "ok")

    # --- a stream of text ---

    async def _stream_start(self, start: SynthesizeStart) -> None:
        self.close()  # a new stream replaces one that never stopped
        self._stream = _Stream(failed=True)  # until its voice is loaded
        ref = await self._voice(start.voice)
        lease = await self.state.models.acquire(ref)
        self._stream = _Stream(ref=ref, lease=lease)

    async def _stream_chunk(self, chunk: SynthesizeChunk) -> None:
        stream = self._stream
        if stream is None:
            raise InvalidRequestError("synthesize-chunk came without synthesize-start.", param="text")
        if stream.failed:
            return
        limit = self.state.settings.tts_max_input_chars
        if len(chunk.text) > limit:
            raise InvalidRequestError(
                f"A synthesize-chunk is {len(chunk.text)} characters long; the limit is {limit} (TTS_MAX_INPUT_CHARS).",
                param="text",
                code="string_above_max_length",
            )
        for sentence in stream.splitter.add(chunk.text):
            await self._speak_sentence(stream, sentence)

    async def _stream_stop(self) -> None:
        stream, self._stream = self._stream, None
        try:
            if stream is not None and not stream.failed and (rest := stream.splitter.finish()):
                await self._speak_sentence(stream, rest)
        finally:
            if stream is not None:
                stream.abandon()
        await self._send(SynthesizeStopped().event())
        if stream is not None and not stream.failed:
            metrics.record_request("synthesize_stream", "ok")

    async def _speak_sentence(self, stream: _Stream, sentence: str) -> None:
        """One sentence of a stream as its own audio-start ... audio-stop (nothing if it has no words)."""
        assert stream.ref is not None
        assert stream.lease is not None
        rate = int(stream.lease.model.config.sample_rate)
        if await self._speak(stream.ref, rate, sentence, started=False):
            await self._send(AudioStop().event())

    # --- shared ---

    async def _speak(self, ref: ModelRef, rate: int, sentence: str, *, started: bool) -> bool:
        """Synthesize `sentence` and send its audio, after an audio-start unless one was sent already.
        Returns whether an audio-start has been sent. The pool slot is held for this sentence only."""
        chunks = await self.state.stream(
            ref, lambda voice: synthesize_speech(voice, sentence, response_format="pcm", sample_rate=rate)
        )
        chunk_bytes = SAMPLES_PER_CHUNK * 2
        try:
            async for pcm in chunks:
                if not started:
                    await self._send(AudioStart(rate=rate, width=2, channels=1).event())
                    started = True
                for offset in range(0, len(pcm), chunk_bytes):
                    audio = pcm[offset : offset + chunk_bytes]
                    await self._send(AudioChunk(rate=rate, width=2, channels=1, audio=audio).event())
        finally:
            await chunks.aclose()
        return started

    async def _voice(self, voice: SynthesizeVoice | None) -> ModelRef:
        """The piper voice a request names: by name (OpenAI names and aliases too), else by language."""
        catalog = self.state.catalog
        if voice is None or voice.name or not voice.language:
            return catalog.voice(voice.name if voice is not None else None)
        wanted = voice.language.replace("-", "_").lower()
        voices = await asyncio.to_thread(list_voices, catalog)
        default = self.state.settings.tts_default_voice
        ranked = sorted(voices, key=lambda candidate: candidate.id != default)
        for matches in (lambda code: code == wanted, lambda code: code.split("_")[0] == wanted.split("_")[0]):
            for candidate in ranked:
                if matches(candidate.language.lower()):
                    return catalog.voice(candidate.id)
        raise ModelNotFoundError(
            voice.language, param="voice", hint="No voice on this server speaks that language; describe lists them."
        )


def _text_to_speak(text: str, max_chars: int) -> str:
    if not text.strip():
        raise InvalidRequestError("The synthesize event has no text to speak.", param="text")
    if len(text) > max_chars:
        raise InvalidRequestError(
            f"The text is {len(text)} characters long; the limit is {max_chars} (TTS_MAX_INPUT_CHARS). "
            "Split it into several requests, or stream it with synthesize-start/-chunk/-stop.",
            param="text",
            code="string_above_max_length",
        )
    return text
