"""Chat completions that hear and speak: the request in words to the LLM, its answer spoken with piper.

Non-streamed, the LLM's whole answer is spoken into one file: `message.audio` = `{id, data,
transcript, expires_at}` and `message.content` null, as OpenAI answers. Streamed (:class:`StreamedAnswer`),
the LLM's chunks are relayed as they come; with a spoken answer their text moves into `delta.audio`:
each sentence, once complete, is spoken and sent as `{id, transcript, data}` (pcm16), so the first
audio leaves while the LLM is still writing. Chunks that finish a choice (and the usage chunk) wait
until its audio is out, after a last `{id, expires_at}` delta, so a client that stops at
`finish_reason` has heard everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from speaches.chat.backend import ChatBackend
from speaches.chat.protocol import ChatAudioFormat, ChatCompletionAudio, ChatCompletionAudioDelta, ChatCompletionRequest
from speaches.chat.sentences import SentenceSplitter, has_words, spoken_text
from speaches.chat.voice import SPEECH_FORMAT_OF, speak
from speaches.errors import ApiError, InvalidRequestError
from speaches.models.catalog import ModelRef
from speaches.sse import SSE_DONE, sse_error, sse_json
from speaches.state import AppState

logger = logging.getLogger(__name__)

MAX_SPOKEN_CHARACTERS = 16_000
"""Longest answer spoken into one non-streamed file (~18 min of speech, ~50 MB as wav)."""
_QUEUED_EVENTS = 32
_QUEUED_SENTENCES = 8


@dataclass(frozen=True)
class SpokenAnswer:
    voice: ModelRef
    audio_format: ChatAudioFormat


async def spoken_completion(
    state: AppState, backend: ChatBackend, body: dict[str, Any], spoken: SpokenAnswer
) -> dict[str, Any]:
    """The LLM's answer with each choice's text spoken into `message.audio`."""
    answer = await backend.llm.complete(body)
    for choice in answer["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str) or not has_words(spoken_text(text)):
            continue  # a tool call, a refusal, an empty answer: nothing to say
        assert isinstance(message, dict)
        if len(text) > MAX_SPOKEN_CHARACTERS:
            raise ApiError(
                f"The LLM's answer is {len(text)} characters long, more than this server speaks into one "
                f"non-streamed answer ({MAX_SPOKEN_CHARACTERS}). Ask for stream=true, or a shorter answer "
                "(max_completion_tokens).",
                status_code=502,
                code="answer_too_long_to_speak",
                error_type="server_error",
            )
        pieces: list[bytes] = []
        async with contextlib.aclosing(
            speak(state, spoken.voice, spoken_text(text), SPEECH_FORMAT_OF[spoken.audio_format])
        ) as audio:
            async for piece in audio:
                pieces.append(piece)
        audio_id = backend.memory.new_audio_id()
        expires_at = backend.memory.remember_answer(audio_id, text)
        data = base64.b64encode(b"".join(pieces)).decode("ascii")
        message["audio"] = ChatCompletionAudio(
            id=audio_id, data=data, expires_at=expires_at, transcript=text
        ).model_dump()
        message["content"] = None
    return answer


class StreamedAnswer:
    """One streamed chat completion, relayed (and spoken) by a task of its own.

    `await start()` opens the LLM's stream, raising its refusal as an error the route can still
    answer with a status; then `events()` yields the server-sent events. `aclose()` (the request's
    cleanup, however it ends) cancels the task without waiting: the LLM connection closes, speech
    stops at its next sentence and the voice's lease goes back. The queue between the task and the
    client is bounded, so a client that stops reading stops the LLM being read.
    """

    def __init__(self, state: AppState, backend: ChatBackend, body: dict[str, Any], spoken: SpokenAnswer | None):
        self._state = state
        self._backend = backend
        self._body = body
        self._spoken = spoken
        self._events: asyncio.Queue[str | None] = asyncio.Queue(_QUEUED_EVENTS)
        self._opened: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._opened = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="chat completion stream")
        await asyncio.shield(self._opened)

    async def events(self) -> AsyncIterator[str]:
        while (event := await self._events.get()) is not None:
            yield event

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            logger.info("the client left mid-answer: the LLM request is cancelled")

    async def _run(self) -> None:
        assert self._opened is not None
        try:
            async with self._backend.llm.stream(self._body) as chunks:
                self._opened.set_result(None)
                if self._spoken is None:
                    async for chunk in chunks:
                        await self._events.put(sse_json(chunk))
                else:
                    await _SpokenRelay(self._state, self._backend, self._spoken, self._events).relay(chunks)
            await self._events.put(SSE_DONE)
        except ApiError as error:
            if not self._opened.done():
                self._opened.set_exception(error)
                return
            await self._events.put(sse_error(error))
        except Exception:
            logger.exception("streamed chat completion failed")
            failure = ApiError("The answer failed on the server; it has been logged.", status_code=500)
            if not self._opened.done():
                self._opened.set_exception(failure)
                return
            await self._events.put(sse_error(failure))
        finally:
            if not self._opened.done():
                self._opened.cancel()
        await self._events.put(None)


class _SpokenRelay:
    """Relays the LLM's chunks with their text moved into spoken `delta.audio` pieces, sentence by sentence."""

    def __init__(
        self, state: AppState, backend: ChatBackend, spoken: SpokenAnswer, events: asyncio.Queue[str | None]
    ) -> None:
        self._state = state
        self._backend = backend
        self._spoken = spoken
        self._events = events
        self._sentences: asyncio.Queue[tuple[int, str | None] | None] = asyncio.Queue(_QUEUED_SENTENCES)
        self._splitters: dict[int, SentenceSplitter] = {}
        self._frame: dict[str, Any] = {"object": "chat.completion.chunk"}

    async def relay(self, chunks: AsyncIterator[dict[str, Any]]) -> None:
        held: list[dict[str, Any]] = []
        try:
            # Reading and speaking run side by side; if either fails the other is cancelled.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._speak_sentences(), name="chat completion speech")
                group.create_task(self._read(chunks, held), name="chat completion reader")
        except BaseExceptionGroup as failures:
            stop = next((error for error in failures.exceptions if isinstance(error, _LlmStreamError)), None)
            if stop is not None:
                await self._events.put(sse_json(stop.chunk))
                return
            raise next(
                (error for error in failures.exceptions if isinstance(error, ApiError)), failures.exceptions[0]
            ) from None
        for chunk in held:
            await self._events.put(sse_json(chunk))

    async def _read(self, chunks: AsyncIterator[dict[str, Any]], held: list[dict[str, Any]]) -> None:
        """Relay each chunk (holding back those from the first `finish_reason` on) and queue its sentences."""
        async for chunk in chunks:
            if "error" in chunk and not chunk.get("choices"):
                raise _LlmStreamError(chunk)
            self._frame.update({key: chunk[key] for key in ("id", "created", "model") if key in chunk})
            relayed, finished = await self._take_text(chunk)
            if relayed is None:
                continue
            if held or finished:
                held.append(relayed)
            else:
                await self._events.put(sse_json(relayed))
        for index, splitter in list(self._splitters.items()):
            await self._finish_choice(index, splitter)
        await self._sentences.put(None)

    async def _take_text(self, chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Feed the chunk's text to its choices' sentences; the chunk without it (None if nothing is left),
        and whether it finishes a choice."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return chunk, False
        kept: list[Any] = []
        finished = False
        for choice in choices:
            if not isinstance(choice, dict):
                kept.append(choice)
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                splitter = self._splitters.setdefault(index, SentenceSplitter(quick_start=True))
                for sentence in splitter.feed(delta["content"]):
                    await self._sentences.put((index, sentence))
                delta = {**delta, "content": None}
                choice = {**choice, "delta": delta}
            if choice.get("finish_reason") is not None:
                finished = True
                if index in self._splitters:
                    await self._finish_choice(index, self._splitters.pop(index))
            if _carries_something(choice):
                kept.append(choice)
        if not kept and choices and not _carries_something_besides_choices(chunk):
            return None, finished
        return {**chunk, "choices": kept}, finished

    async def _finish_choice(self, index: int, splitter: SentenceSplitter) -> None:
        if (rest := splitter.flush()).strip():
            await self._sentences.put((index, rest))
        await self._sentences.put((index, None))

    async def _speak_sentences(self) -> None:
        audio_ids: dict[int, str] = {}
        transcripts: dict[int, list[str]] = {}
        while (item := await self._sentences.get()) is not None:
            index, sentence = item
            if sentence is None:
                if index in audio_ids:
                    transcript = "".join(transcripts.pop(index)).strip()
                    expires_at = self._backend.memory.remember_answer(audio_ids[index], transcript)
                    await self._put_audio(index, ChatCompletionAudioDelta(id=audio_ids[index], expires_at=expires_at))
                continue
            audio_id = audio_ids.setdefault(index, self._backend.memory.new_audio_id())
            transcripts.setdefault(index, []).append(sentence)
            transcript: str | None = sentence
            words = spoken_text(sentence)
            if has_words(words):
                pieces = speak(self._state, self._spoken.voice, words, SPEECH_FORMAT_OF[self._spoken.audio_format])
                async with contextlib.aclosing(pieces):
                    async for piece in pieces:
                        data = base64.b64encode(piece).decode("ascii")
                        delta = ChatCompletionAudioDelta(id=audio_id, data=data, transcript=transcript)
                        await self._put_audio(index, delta)
                        transcript = None
            if transcript is not None:  # nothing to say in it (a rule, an emoji): the words still count
                await self._put_audio(index, ChatCompletionAudioDelta(id=audio_id, transcript=transcript))

    async def _put_audio(self, index: int, audio: ChatCompletionAudioDelta) -> None:
        choice = {"index": index, "delta": {"audio": audio.model_dump(exclude_none=True)}, "finish_reason": None}
        chunk = {**self._frame, "choices": [choice]}
        await self._events.put(sse_json(chunk))


class _LlmStreamError(Exception):
    """The LLM sent an error event mid-stream: relay it and end the answer."""

    def __init__(self, chunk: dict[str, Any]) -> None:
        super().__init__("the LLM sent an error event")
        self.chunk = chunk


def _carries_something(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    has_delta = isinstance(delta, dict) and any(value is not None for value in delta.values())
    return has_delta or any(choice.get(key) is not None for key in ("finish_reason", "logprobs"))


def _carries_something_besides_choices(chunk: dict[str, Any]) -> bool:
    return any(chunk.get(key) is not None for key in ("usage",))


def spoken_answer(state: AppState, request: ChatCompletionRequest) -> SpokenAnswer | None:
    """How the answer is to be spoken, when `modalities` asks for audio; the voice resolved (404 if unknown)."""
    if not request.modalities or "audio" not in request.modalities:
        return None
    if request.audio is None:
        raise InvalidRequestError(
            "'modalities' includes 'audio', so 'audio' is required: the voice and format of the spoken answer, "
            'e.g. {"voice": "alloy", "format": "wav"}.',
            param="audio",
        )
    if request.stream and request.audio.format != "pcm16":
        raise InvalidRequestError(
            f"A streamed spoken answer is sent as raw pcm16 pieces, as at OpenAI; '{request.audio.format}' is only "
            "for non-streamed answers. Set audio.format to 'pcm16', or stream to false.",
            param="audio.format",
        )
    return SpokenAnswer(voice=state.catalog.voice(request.audio.voice_name), audio_format=request.audio.format)


def llm_body(request: ChatCompletionRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What the LLM gets: the client's request as sent, in words, without the audio options it cannot act on."""
    body = request.model_dump(exclude_unset=True, exclude={"modalities", "audio", "stream", "messages"})
    body["messages"] = messages
    return body
