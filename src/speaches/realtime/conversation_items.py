"""The items of a Realtime conversation session: `conversation.item.create/retrieve/delete/truncate`, and
the transcripts a response must wait for.

An item the client creates keeps OpenAI's shape, with an id, `object` and `status` filled in. A user
`input_audio` part that carries audio (base64, in the session's input format) is transcribed in the
background, as a committed turn is: `conversation.item.input_audio_transcription.completed` follows, and a
response that includes the item waits for that transcript before the LLM is asked.
"""

from __future__ import annotations

import asyncio
import io
import logging
import wave
from typing import Any, Protocol

from speaches.chat.conversation import Conversation
from speaches.chat.voice import transcribe
from speaches.errors import ApiError
from speaches.realtime import conversation_protocol as events
from speaches.realtime import protocol
from speaches.realtime.audio_input import decode_g711
from speaches.realtime.protocol import EventError
from speaches.realtime.transcription import TranscriptionSession
from speaches.realtime.work import decode_base64
from speaches.state import AppState

logger = logging.getLogger(__name__)

MAX_BACKGROUND_TASKS = 8
"""Transcriptions of created audio items (and small sends) under way at once; more wait their turn."""


class ItemHost(Protocol):
    """What the items need of their session (speaches.realtime.conversation.ConversationSession)."""

    state: AppState
    conversation: Conversation
    ears: TranscriptionSession

    async def emit(self, kind: str, /, **fields: Any) -> None: ...


class ItemHandling:
    def __init__(self, session: ItemHost) -> None:
        self._session = session
        self._transcribed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._room = asyncio.Semaphore(MAX_BACKGROUND_TASKS)

    async def handle(self, event: Any) -> None:
        if isinstance(event, events.ConversationItemCreate):
            await self._create(event)
        elif isinstance(event, events.ConversationItemRetrieve):
            await self._session.emit("conversation.item.retrieved", item=self._known(event.item_id))
        elif isinstance(event, events.ConversationItemDelete):
            self._known(event.item_id)
            self._session.conversation.delete(event.item_id)
            await self._session.emit("conversation.item.deleted", item_id=event.item_id)
        elif isinstance(event, events.ConversationItemTruncate):
            await self._truncate(event)

    def normalized(self, item: Any, *, transcribe: bool = True) -> dict[str, Any]:
        """The item as the conversation keeps it (and the client sees it)."""
        shaped = item.model_dump(exclude_none=True)
        shaped["id"] = shaped.get("id") or protocol.new_id("item")
        shaped["object"] = "realtime.item"
        shaped["status"] = "completed"
        if shaped["type"] == "function_call":
            shaped["call_id"] = shaped.get("call_id") or protocol.new_id("call")
        for part in shaped.get("content", ()):
            if part["type"] == "input_audio" and not transcribe:
                part.setdefault("transcript", "")
        return shaped

    async def _create(self, event: events.ConversationItemCreate) -> None:
        conversation = self._session.conversation
        previous = event.previous_item_id
        if previous not in (None, "root") and previous not in conversation:
            raise EventError(
                f"previous_item_id '{previous[:100]}' names no item of this conversation.",
                param="previous_item_id",
                code="item_not_found",
            )
        item = self.normalized(event.item)
        if item["id"] in conversation:
            raise EventError(
                f"An item with id '{item['id'][:100]}' exists already.", param="item.id", code="duplicate_item_id"
            )
        audio_parts = [
            (index, part)
            for index, part in enumerate(item.get("content", ()))
            if part["type"] == "input_audio" and "audio" in part
        ]
        if audio_parts and item.get("role") != "user":
            raise EventError("Only user messages may carry input audio.", param="item.content", code="invalid_value")
        clips = [(index, decode_base64(part.pop("audio"))) for index, part in audio_parts]
        for _index, part in audio_parts:
            part["transcript"] = part.get("transcript")
        added_after = conversation.add(item, after=previous)
        await self._session.emit("conversation.item.added", previous_item_id=added_after, item=item)
        if clips:
            self.awaiting_transcript(item["id"])
            # Backpressure: with MAX_BACKGROUND_TASKS clips being transcribed, the next waits here, and with it
            # the receive loop, so a client cannot pile up decoded audio faster than it is heard.
            await self._room.acquire()
            self.keep(asyncio.get_running_loop().create_task(self._transcribe(item, clips)))
        else:
            await self._session.emit("conversation.item.done", item=item)

    async def _transcribe(self, item: dict[str, Any], clips: list[tuple[int, bytes]]) -> None:
        session = self._session
        ears = session.ears.config
        assert ears is not None
        try:
            try:
                for index, clip in clips:
                    wav = _wav(clip, ears.input_format.encoding, ears.input_format.sample_rate)
                    text = await transcribe(session.state, ears.model_ref, wav, language=ears.language)
                    item["content"][index]["transcript"] = text
                    session.conversation.update(item)
                    await session.emit(
                        "conversation.item.input_audio_transcription.completed",
                        item_id=item["id"],
                        content_index=index,
                        transcript=text,
                        usage={"type": "duration", "seconds": round(_seconds(clip, ears), 3)},
                    )
            finally:
                self._room.release()
            await session.emit("conversation.item.done", item=item)
        except ApiError as error:
            await session.emit(
                "conversation.item.input_audio_transcription.failed",
                item_id=item["id"],
                content_index=0,
                error=error.body()["error"],
            )
        finally:
            self.transcript_ready(item["id"])

    async def _truncate(self, event: events.ConversationItemTruncate) -> None:
        item = self._known(event.item_id)
        content = item.get("content") or []
        if (
            item.get("role") != "assistant"
            or event.content_index >= len(content)
            or content[event.content_index].get("type") != "output_audio"
        ):
            raise EventError(
                "Only the audio of an assistant message can be truncated.", param="content_index", code="invalid_value"
            )
        conversation = self._session.conversation
        length = conversation.audio_ms(event.item_id)
        if event.audio_end_ms > length:
            raise EventError(
                f"Audio content of {length:.0f}ms is already shorter than {event.audio_end_ms}ms.",
                param="audio_end_ms",
                code="invalid_value",
            )
        conversation.truncate(event.item_id, event.audio_end_ms)
        await self._session.emit(
            "conversation.item.truncated",
            item_id=event.item_id,
            content_index=event.content_index,
            audio_end_ms=event.audio_end_ms,
        )

    def _known(self, item_id: str) -> dict[str, Any]:
        item = self._session.conversation.get(item_id)
        if item is None:
            raise EventError(f"Item with item_id '{item_id[:100]}' not found.", param="item_id", code="item_not_found")
        return item

    # --- transcripts a response waits for ---

    def awaiting_transcript(self, item_id: str) -> None:
        self._transcribed.setdefault(item_id, asyncio.Event())

    def transcript_ready(self, item_id: str) -> None:
        ready = self._transcribed.pop(item_id, None)
        if ready is not None:
            ready.set()

    async def transcripts_of(self, items: list[dict[str, Any]]) -> None:
        """Until every one of these items still being transcribed has its transcript."""
        waiting = [self._transcribed[item["id"]].wait() for item in items if item.get("id") in self._transcribed]
        if waiting:
            await asyncio.gather(*waiting)

    # --- background work ---

    def keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def abandon(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _wav(clip: bytes, encoding: str, sample_rate: int) -> bytes:
    """An appended-style audio clip (PCM16, or G.711) as a WAV file the decoder reads."""
    if encoding != "pcm16":
        clip = decode_g711(clip, encoding).tobytes()  # type: ignore[arg-type]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(clip[: len(clip) - len(clip) % 2])
    return buffer.getvalue()


def _seconds(clip: bytes, ears: Any) -> float:
    bytes_per_sample = 2 if ears.input_format.encoding == "pcm16" else 1
    return len(clip) / bytes_per_sample / ears.input_format.sample_rate
