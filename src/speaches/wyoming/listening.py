"""Speech to text over Wyoming: `transcribe`, `audio-start`, `audio-chunk`..., `audio-stop`.

`transcribe` (optional: model `name`, `language`, `transcript_names`/`transcript_terms` to bias
towards) opens a request; audio without it takes the defaults. The answer is `transcript-start`, a
`transcript-chunk` per decoded segment, `transcript` with the whole text, then `transcript-stop`;
clients that predate the streaming events read only `transcript`. The model is leased as soon as
audio starts, so a model that is not loaded yet loads while the user is still speaking; the
transcription itself is the HTTP API's (`Transcription`, through `AppState.stream`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event

from speaches.errors import InvalidRequestError
from speaches.languages import language_code
from speaches.models.catalog import ModelRef
from speaches.models.manager import Lease
from speaches.state import AppState
from speaches.transcription.formats import TextJoiner
from speaches.transcription.whisper import DecodeOptions, Transcription
from speaches.wyoming import metrics
from speaches.wyoming.framing import parse
from speaches.wyoming.info import PROGRAM_NAME
from speaches.wyoming.pcm import PcmFormat, PcmSpool

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment

Send = Callable[[Event], Awaitable[None]]

EVENTS = frozenset({"transcribe", "audio-start", "audio-chunk", "audio-stop"})
# Whisper's hotwords are prompt tokens: Home Assistant's entity names beyond this are dropped.
MAX_HOTWORDS_CHARS = 1000


@dataclass
class _Request:
    """One request, from `transcribe` (or its first audio) to `audio-stop`."""

    ref: ModelRef | None = None
    options: DecodeOptions = field(default_factory=DecodeOptions)
    spool: PcmSpool | None = None
    warm_up: asyncio.Task[Lease[Any]] | None = None
    """A lease taken when the audio starts: it loads the model while the user speaks."""
    failed: bool = False
    """An error was answered: the rest of its audio is ignored, and its `audio-stop` gets no answer."""

    def abandon(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if self.warm_up is not None:
            _drop_lease(self.warm_up)
            self.warm_up = None


def _drop_lease(task: asyncio.Task[Lease[Any]]) -> None:
    if not task.done():
        task.cancel()  # acquire() gives its reference back when cancelled
    elif not task.cancelled() and task.exception() is None:
        task.result().release()


class SpeechToText:
    def __init__(self, state: AppState, send: Send) -> None:
        self.state = state
        self._send = send
        self._request: _Request | None = None

    async def handle(self, event: Event) -> None:
        if Transcribe.is_type(event.type):
            self._begin(parse(Transcribe, event))
        elif AudioStart.is_type(event.type):
            self._audio_start(PcmFormat.from_event_data(event.data))
        elif AudioChunk.is_type(event.type):
            await self._audio_chunk(event)
        elif AudioStop.is_type(event.type):
            await self._audio_stop()

    def fail(self, event_type: str) -> None:
        """The request an error was answered for is given up; the rest of it is ignored."""
        if self._request is not None:
            self._request.abandon()
        self._request = None if event_type == "audio-stop" else _Request(failed=True)
        metrics.record_request("transcribe", "error")

    def close(self) -> None:
        if self._request is not None:
            self._request.abandon()
            self._request = None

    def _begin(self, transcribe: Transcribe) -> None:
        self.close()
        self._request = _Request(failed=True)  # until the request is known to be valid
        requested = transcribe.name if transcribe.name != PROGRAM_NAME else None
        hotwords = " ".join([*(transcribe.transcript_names or []), *(transcribe.transcript_terms or [])])
        self._request = _Request(
            ref=self.state.catalog.stt(requested, param="name"),
            options=DecodeOptions(
                language=_language(transcribe.language),
                default_language=self.state.settings.default_language,
                hotwords=hotwords[:MAX_HOTWORDS_CHARS] or None,
            ),
        )

    def _audio_start(self, pcm_format: PcmFormat) -> None:
        request = self._request
        if request is None:  # audio without `transcribe`: the defaults
            request = self._request = _Request(
                ref=self.state.catalog.stt(None),
                options=DecodeOptions(default_language=self.state.settings.default_language),
            )
        if request.failed:
            return
        assert request.ref is not None
        if request.spool is not None:  # a second audio-start: the audio starts over
            request.spool.close()
        request.spool = PcmSpool(pcm_format, self.state.settings.max_upload_bytes)
        if request.warm_up is None:
            request.warm_up = asyncio.create_task(self.state.models.acquire(request.ref), name=f"warm up {request.ref}")
            request.warm_up.add_done_callback(_retrieve_exception)

    async def _audio_chunk(self, event: Event) -> None:
        chunk_format = PcmFormat.from_event_data(event.data)
        if self._request is None or (self._request.spool is None and not self._request.failed):
            self._audio_start(chunk_format)  # chunks without audio-start take their own format
        request = self._request
        assert request is not None
        if request.failed or request.spool is None:
            return
        if chunk_format != request.spool.format:
            raise InvalidRequestError(
                f"An audio-chunk is {chunk_format} but the stream started as {request.spool.format}; "
                "send the whole stream in one format.",
                param="audio",
            )
        if event.payload:
            await request.spool.append(event.payload)

    async def _audio_stop(self) -> None:
        request, self._request = self._request, None
        if request is None:
            await self._answer("", None, started=False)
            return
        if request.failed:
            return
        try:
            await self._transcribe(request)
        finally:
            request.abandon()

    async def _transcribe(self, request: _Request) -> None:
        assert request.ref is not None
        spool, request.spool = request.spool, None
        if spool is None or spool.data_bytes == 0:
            if spool is not None:
                spool.close()
            await self._answer("", request.options.language, started=False)
            return
        audio = spool.wav_file()
        transcription = Transcription(audio, request.options, self.state.settings.whisper, model_id=request.ref.id)

        def work(model: WhisperModel) -> Iterator[Segment]:
            with audio:  # closed in the pool once the last step is done
                yield from transcription.segments(model)

        try:
            segments = await self.state.stream(request.ref, work)
        except BaseException:
            audio.close()
            raise
        joiner = TextJoiner()
        started = False
        try:
            async for segment in segments:
                if not started:
                    await self._send(TranscriptStart(language=transcription.language).event())
                    started = True
                if delta := joiner.add(segment.text):
                    await self._send(TranscriptChunk(text=delta).event())
        finally:
            await segments.aclose()
        await self._answer(joiner.text, transcription.language, started=started)

    async def _answer(self, text: str, language: str | None, *, started: bool) -> None:
        if not started:
            await self._send(TranscriptStart(language=language).event())
        await self._send(Transcript(text=text, language=language).event())
        await self._send(TranscriptStop().event())
        metrics.record_request("transcribe", "ok")


def _language(language: str | None) -> str | None:
    """Whisper's code for a Wyoming language: `en`, `english`, or a locale such as `en-US` / `en_US`."""
    try:
        return language_code(language)
    except InvalidRequestError:
        if language and (base := language.replace("_", "-").split("-")[0]) != language:
            return language_code(base)
        raise


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
