"""One response of a Realtime conversation: the LLM's streamed answer as the Realtime API's server events.

The answer's text becomes one assistant message item. Spoken (`output_modalities: ["audio"]`), it is cut
into sentences as it streams (the first at its first clause, see `speaches.chat.sentences`); each sentence
goes out as a `response.output_audio_transcript.delta` and then its audio as `response.output_audio.delta`
events (at most one second each), while the LLM writes on. As text, each of the LLM's deltas goes out as a
`response.output_text.delta` at once. Tool calls become `function_call` items, their arguments streamed as
`response.function_call_arguments.delta`.

`cancel(reason)` stops the response where it is (barge-in: `turn_detected`; `response.cancel`:
`client_cancelled`): the LLM connection is closed, speech stops before its next piece, the message keeps
the words said so far (status `incomplete`), and `response.done` says `cancelled`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from speaches.chat.conversation import Conversation
from speaches.chat.llm import LlmClient
from speaches.chat.sentences import SentenceSplitter, has_words, spoken_text
from speaches.chat.voice import speak
from speaches.errors import ApiError
from speaches.models.catalog import ModelRef
from speaches.state import AppState

logger = logging.getLogger(__name__)

MAX_AUDIO_EVENT_SECONDS = 1.0


class Emit(Protocol):
    def __call__(self, kind: str, /, **fields: Any) -> Awaitable[None]: ...


@dataclass(frozen=True)
class VoiceOutput:
    voice: ModelRef
    speed: float = 1.0
    sample_rate: int = 24_000
    encode: Callable[[bytes], bytes] | None = None
    """PCM16 at `sample_rate` -> the session's output encoding (G.711); None sends PCM16."""
    bytes_per_second: int = 48_000
    """Of the encoded audio: PCM16 at 24 kHz is 48000, G.711 at 8 kHz 8000."""


@dataclass
class ResponsePlan:
    body: dict[str, Any]
    """The chat completion request for the LLM (model, messages, tools, ...), without `stream`."""
    voice: VoiceOutput | None
    """How to speak the answer; None answers in text."""
    conversation: Conversation | None
    """Where the answer's items go; None for an out-of-band response."""
    metadata: dict[str, Any] | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class Response:
    def __init__(self, state: AppState, llm: LlmClient, plan: ResponsePlan, emit: Emit) -> None:
        self.id = new_id("resp")
        self._state = state
        self._llm = llm
        self._plan = plan
        self._send = emit
        self.status = "in_progress"
        self.status_details: dict[str, Any] | None = None
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self._open: list[dict[str, Any]] = []
        self._work: asyncio.Task[None] | None = None
        self._cancel_reason: str | None = None
        self._finish_reason: str | None = None
        self._message: dict[str, Any] | None = None
        self._splitter = SentenceSplitter(quick_start=True)
        self._calls: dict[int, dict[str, Any]] = {}

    async def _emit(self, kind: str, /, **fields: Any) -> None:
        # A copy: the event waits in the outbox while this response's items go on changing.
        await self._send(kind, **copy.deepcopy(fields))

    @property
    def plan(self) -> ResponsePlan:
        return self._plan

    @property
    def done(self) -> bool:
        return self.status != "in_progress"

    def describe(self) -> dict[str, Any]:
        voice = self._plan.voice
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": self.status,
            "status_details": self.status_details,
            "output": self.output,
            "conversation_id": None if self._plan.conversation is None else "conv_default",
            "output_modalities": ["audio"] if voice else ["text"],
            "audio": {"output": {"format": None, "voice": voice.voice.id}} if voice else None,
            "max_output_tokens": self._plan.body.get("max_tokens", "inf"),
            "metadata": self._plan.metadata,
            "usage": self.usage,
        }

    def cancel(self, reason: str) -> None:
        """Stop now (never waits); `run` then finishes the open items and sends `response.done`."""
        if self.done or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        if self._work is not None:
            self._work.cancel()

    async def run(self) -> None:
        await self._emit("response.created", response=self.describe())
        if self._cancel_reason is None:
            self._work = asyncio.create_task(self._generate(), name=f"response {self.id}")
            try:
                await asyncio.wait([self._work])
            except asyncio.CancelledError:
                self._work.cancel()  # the session itself is going away
                raise
        work = self._work
        failure = work.exception() if work is not None and not work.cancelled() else None
        if self._cancel_reason is not None and failure is None:
            self.status = "cancelled"
            self.status_details = {"type": "cancelled", "reason": self._cancel_reason}
        elif failure is not None:
            error = failure if isinstance(failure, ApiError) else None
            if error is None:
                logger.error("response %s failed", self.id, exc_info=failure)
                error = ApiError("The response failed on the server; it has been logged.", status_code=500)
            self.status = "failed"
            self.status_details = {
                "type": "failed",
                "error": {"type": error.error_type, "code": error.code, "message": error.message},
            }
        elif self._finish_reason == "length":
            self.status = "incomplete"
            self.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
        else:
            self.status = "completed"
            self.status_details = None
        for item in list(self._open):
            await self._close_item(item, "completed" if self.status == "completed" else "incomplete")
        await self._emit("response.done", response=self.describe())

    # --- the work ---

    async def _generate(self) -> None:
        body = {**self._plan.body, "stream_options": {"include_usage": True}}
        async with self._llm.stream(body) as chunks:
            async for chunk in chunks:
                if "error" in chunk and not chunk.get("choices"):
                    raise _llm_error_event(chunk)
                if isinstance(chunk.get("usage"), dict):
                    self.usage = _usage(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue  # a conversation has one answer: the first choice
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("content"), str) and delta["content"]:
                        await self._text(delta["content"])
                    for call in delta.get("tool_calls") or ():
                        if isinstance(call, dict):
                            await self._tool_call_delta(call)
                    if choice.get("finish_reason"):
                        self._finish_reason = choice["finish_reason"]
        if self._message is not None:
            await self._say(self._splitter.flush())
            await self._close_message()
        for call in self._calls.values():
            await self._close_call(call)

    async def _text(self, text: str) -> None:
        message = self._message or await self._open_message()
        if self._plan.voice is None:
            message["content"][0]["text"] += text
            await self._emit("response.output_text.delta", **self._where(message), delta=text)
            self._update_conversation(message)
            return
        for sentence in self._splitter.feed(text):
            await self._say(sentence)

    async def _say(self, sentence: str) -> None:
        """Speak one piece of the answer: its transcript delta, then its audio."""
        assert self._message is not None
        voice = self._plan.voice
        if not sentence.strip() or voice is None:
            return  # trailing whitespace of the answer: nothing to say or show
        message = self._message
        part = message["content"][0]
        part["transcript"] += sentence
        await self._emit("response.output_audio_transcript.delta", **self._where(message), delta=sentence)
        conversation = self._plan.conversation
        entry = conversation.entry(message["id"]) if conversation is not None else None
        if entry is not None:
            entry.spoken.append((sentence, 0.0))  # its length grows with each piece sent, so a cut-off piece counts
        milliseconds = 0.0
        words = spoken_text(sentence)
        if has_words(words):
            pieces = speak(self._state, voice.voice, words, "pcm", speed=voice.speed, sample_rate=voice.sample_rate)
            async with contextlib.aclosing(pieces):
                async for pcm in pieces:
                    audio = voice.encode(pcm) if voice.encode else pcm
                    step = int(voice.bytes_per_second * MAX_AUDIO_EVENT_SECONDS)
                    for start in range(0, len(audio), step):
                        piece = audio[start : start + step]
                        delta = base64.b64encode(piece).decode("ascii")
                        await self._emit("response.output_audio.delta", **self._where(message), delta=delta)
                        milliseconds += len(piece) * 1000 / voice.bytes_per_second
                        if entry is not None:
                            entry.spoken[-1] = (sentence, milliseconds)
        self._update_conversation(message)

    async def _open_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        await self._open_item(message)
        part = {"type": "audio", "transcript": ""} if self._plan.voice else {"type": "text", "text": ""}
        await self._emit("response.content_part.added", **self._where(message), part=dict(part))
        message["content"].append(
            {"type": "output_audio", "transcript": ""} if self._plan.voice else {"type": "output_text", "text": ""}
        )
        self._message = message
        return message

    async def _close_message(self) -> None:
        message = self._message
        assert message is not None
        part = message["content"][0]
        where = self._where(message)
        if self._plan.voice is not None:
            await self._emit("response.output_audio.done", **where)
            await self._emit("response.output_audio_transcript.done", **where, transcript=part["transcript"])
            done_part = {"type": "audio", "transcript": part["transcript"]}
        else:
            await self._emit("response.output_text.done", **where, text=part["text"])
            done_part = {"type": "text", "text": part["text"]}
        await self._emit("response.content_part.done", **where, part=done_part)
        await self._close_item(message, "completed")

    async def _tool_call_delta(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", 0)
        function = delta.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            call = {
                "id": new_id("item"),
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "call_id": delta.get("id") or new_id("call"),
                "name": function.get("name") or "",
                "arguments": "",
            }
            self._calls[index] = call
            await self._open_item(call)
        elif function.get("name") and not call["name"]:
            call["name"] = function["name"]
        if arguments := function.get("arguments"):
            call["arguments"] += arguments
            await self._emit(
                "response.function_call_arguments.delta",
                response_id=self.id,
                item_id=call["id"],
                output_index=self.output.index(call),
                call_id=call["call_id"],
                delta=arguments,
            )
            self._update_conversation(call)

    async def _close_call(self, call: dict[str, Any]) -> None:
        await self._emit(
            "response.function_call_arguments.done",
            response_id=self.id,
            item_id=call["id"],
            output_index=self.output.index(call),
            call_id=call["call_id"],
            name=call["name"],
            arguments=call["arguments"],
        )
        await self._close_item(call, "completed")

    # --- items ---

    async def _open_item(self, item: dict[str, Any]) -> None:
        self.output.append(item)
        self._open.append(item)
        await self._emit(
            "response.output_item.added", response_id=self.id, output_index=len(self.output) - 1, item=item
        )
        conversation = self._plan.conversation
        if conversation is not None:
            previous = conversation.add(item)
            await self._emit("conversation.item.added", previous_item_id=previous, item=item)

    async def _close_item(self, item: dict[str, Any], status: str) -> None:
        item["status"] = status
        self._open.remove(item)
        self._update_conversation(item)
        await self._emit(
            "response.output_item.done", response_id=self.id, output_index=self.output.index(item), item=item
        )
        if self._plan.conversation is not None:
            await self._emit("conversation.item.done", item=item)

    def _update_conversation(self, item: dict[str, Any]) -> None:
        if self._plan.conversation is not None:
            self._plan.conversation.update(item)

    def _where(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "response_id": self.id,
            "item_id": message["id"],
            "output_index": self.output.index(message),
            "content_index": 0,
        }


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    """The LLM's token counts in the Realtime API's usage shape (the audio is not counted in tokens here)."""
    input_tokens = int(usage.get("prompt_tokens") or 0)
    output_tokens = int(usage.get("completion_tokens") or 0)
    return {
        "total_tokens": int(usage.get("total_tokens") or input_tokens + output_tokens),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
    }


def _llm_error_event(chunk: dict[str, Any]) -> ApiError:
    error = chunk.get("error")
    if isinstance(error, dict):
        return ApiError(
            str(error.get("message") or "The LLM failed mid-answer."),
            status_code=502,
            code=None if error.get("code") is None else str(error["code"]),
            error_type=str(error.get("type") or "server_error"),
        )
    return ApiError(f"The LLM failed mid-answer: {error}", status_code=502, error_type="server_error")
