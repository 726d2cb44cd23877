"""Server-sent events answers (streamed transcriptions, streamed speech), through sse-starlette.

What it adds to a plain streaming response: a keep-alive comment every `SSE_PING_SECONDS` while no
event is due (a long first segment must not let a proxy close an idle-looking connection), its own
watch for the client leaving, and an orderly end on shutdown within `SHUTDOWN_GRACE_SECONDS`. A
client that stops reading is ended by the send timeout every response has (`speaches.web.limits`),
so pings and events share one bound rather than two.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse

from speaches.config import Settings


def event_stream(events: AsyncIterator[str] | AsyncIterator[bytes], settings: Settings) -> EventSourceResponse:
    """Answer with `events`, each already framed as one SSE event (see `speaches.sse`)."""

    async def encoded() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                yield event.encode() if isinstance(event, str) else event

    return EventSourceResponse(
        encoded(),
        ping=settings.sse_ping_seconds,
        sep="\n",
        headers={"Cache-Control": "no-cache"},
        shutdown_grace_period=settings.shutdown_grace_seconds,
    )
