"""One turn of a Realtime transcription session: a conversation item, transcribed while it is spoken."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from speaches.errors import ApiError
from speaches.live.session import SAMPLE_RATE, LiveTranscriber
from speaches.models.manager import Lease
from speaches.realtime import protocol
from speaches.realtime.work import Outbox

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Turn:
    """One turn of speech: a conversation item being transcribed."""

    item_id: str
    transcriber: LiveTranscriber
    lease: Lease[Any]
    announced: bool
    """Whether the client knows the item id (speech_started, or the commit): deltas wait until it does."""
    fed_until: int
    """Absolute sample index (on the session's timeline) up to which this turn has its audio."""
    started_at: int
    held: list[str] = field(default_factory=list)
    words: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    previous: Turn | None = None
    """The turn before, while it is being finished: items complete in the order they were spoken."""

    @property
    def samples(self) -> int:
        return self.fed_until - self.started_at

    async def transcribe(self, outbox: Outbox, *, logprobs: bool) -> None:
        """The turn's deltas as its words are confirmed, then `completed` and `conversation.item.done` (once the
        turn before has completed: items complete in the order they were spoken); `failed` if a step fails."""
        transcriber = self.transcriber
        try:
            async for update in transcriber.updates():
                if not update.delta:
                    continue
                if logprobs:
                    self.words.extend(update.words)
                if self.announced:
                    await outbox.put(self.delta_event(update.delta, update.words if logprobs else None))
                else:
                    self.held.append(update.delta)
            if self.previous is not None and self.previous.task is not None:
                await asyncio.wait([self.previous.task])
            self.previous = None
            completed: dict[str, Any] = {
                "item_id": self.item_id,
                "content_index": 0,
                "transcript": transcriber.text,
                "usage": {"type": "duration", "seconds": round(self.samples / SAMPLE_RATE, 3)},
            }
            if logprobs:
                completed["logprobs"] = protocol.logprobs_of(self.words)
            await outbox.put(
                protocol.server_event("conversation.item.input_audio_transcription.completed", **completed)
            )
            item = protocol.user_audio_item(self.item_id, transcriber.text, "completed")
            await outbox.put(protocol.server_event("conversation.item.done", item=item))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not isinstance(error, ApiError):
                logger.exception("realtime transcription of %s failed", self.item_id)
                error = ApiError("The transcription failed on the server; it has been logged.", status_code=500)
            await outbox.put(
                protocol.server_event(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=self.item_id,
                    content_index=0,
                    error=error.body()["error"],
                )
            )
        finally:
            self.give_back()

    def delta_event(self, delta: str, words: Any | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"item_id": self.item_id, "content_index": 0, "delta": delta}
        if words is not None:
            fields["logprobs"] = protocol.logprobs_of(words)
        return protocol.server_event("conversation.item.input_audio_transcription.delta", **fields)

    def give_back(self) -> None:
        """Release the model once no step of this turn runs any more (releasing twice is harmless)."""
        self.transcriber.after_current_step(self.lease.release)
