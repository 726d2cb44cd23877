"""One Realtime API WebSocket: JSON events in, the session's server events out, and how it ends.

The router picks the session kind; this module runs the accepted socket for either. Every client event is a
JSON text frame: a frame that cannot be taken (bad JSON, an unknown type or field, an audio chunk that is not
base64) gets an `error` event naming the client event, and the session goes on. The session ends when the
client closes (its work stops at once), on `session.close` (translation), after
`LIVE_IDLE_TIMEOUT_SECONDS` without a frame, or at `LIVE_MAX_SESSION_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from fastapi import WebSocket
from starlette import status

from speaches import metrics
from speaches.config import Settings
from speaches.errors import ApiError
from speaches.live.socket import SessionSocket, utf8_size
from speaches.realtime import protocol
from speaches.realtime.protocol import EventError
from speaches.realtime.work import Outbox, off_loop

logger = logging.getLogger(__name__)

PARSE_OFF_LOOP_BYTES = 64 * 1024
"""Events larger than this (audio appends, mostly) are parsed in a worker thread, not on the event loop."""

CLOSE_DONE = status.WS_1000_NORMAL_CLOSURE
CLOSE_GOING_AWAY = status.WS_1001_GOING_AWAY
CLOSE_REFUSED = status.WS_1008_POLICY_VIOLATION
CLOSE_TOO_BIG = status.WS_1009_MESSAGE_TOO_BIG
CLOSE_SERVER_ERROR = status.WS_1011_INTERNAL_ERROR


class RealtimeSession(Protocol):
    outbox: Outbox

    async def start(self) -> None: ...
    async def handle(self, raw: dict[str, Any]) -> None: ...
    async def ready_for_input(self) -> None: ...
    async def finish(self) -> None: ...
    def abandon(self) -> None: ...
    @property
    def received_seconds(self) -> float: ...
    @property
    def closing(self) -> bool: ...


class RealtimeConnection:
    def __init__(self, websocket: WebSocket, settings: Settings, session: RealtimeSession, audio_kind: str) -> None:
        self._socket = SessionSocket(websocket)
        self._websocket = websocket
        self._settings = settings
        self._session = session
        self._audio_kind = audio_kind
        self._final_close = (CLOSE_DONE, "session closed")

    async def refuse(self, error: ApiError, code: int | None = None) -> None:
        await self._socket.send(protocol.error_event(error))
        await self._socket.close(
            code or (CLOSE_SERVER_ERROR if error.status_code >= 500 else CLOSE_REFUSED), error.message
        )

    async def serve(self) -> None:
        try:
            await self._session.start()
        except Exception as error:
            self._session.abandon()
            if not isinstance(error, ApiError):
                logger.exception("a realtime session failed to start")
                error = ApiError("The session could not start on the server; it has been logged.", status_code=500)
            await self.refuse(error)
            return
        sender = asyncio.create_task(self._send_all(), name="realtime sender")
        finished = False
        try:
            finished = await self._receive(sender)
            if finished:
                await sender  # what the session still has to say, then the close
        finally:
            if not finished:
                self._session.abandon()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            metrics.record_audio_seconds(self._audio_kind, self._session.received_seconds)  # type: ignore[arg-type]

    async def _send_all(self) -> None:
        async for event in self._session.outbox.events():
            await self._socket.send(event)
            if self._socket.closed:
                return
        await self._socket.close(*self._final_close)

    async def _receive(self, sender: asyncio.Task[None]) -> bool:
        """Take client events until the session is finished (True) or the client has gone (False)."""
        idle_timeout = self._settings.live_idle_timeout_seconds
        max_session = self._settings.live_max_session_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_session
        while not sender.done():
            # Backpressure: while a transcriber has as much audio waiting as it may hold, read nothing more.
            await self._session.ready_for_input()
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(self._websocket.receive(), min(idle_timeout, max(left, 0.0)))
            except TimeoutError:
                if left <= idle_timeout:
                    reason = f"session time limit: {max_session:g} s reached (LIVE_MAX_SESSION_SECONDS)"
                else:
                    reason = f"idle timeout: nothing received for {idle_timeout:g} s"
                self._final_close = (CLOSE_GOING_AWAY, reason)
                await self._session.finish()
                return True
            if message["type"] == "websocket.disconnect":
                return False
            if not await self._take(message):
                return False
            if self._session.closing:
                return True
        return False

    async def _take(self, message: dict[str, Any]) -> bool:
        """Act on one frame; False when it ended the session (a frame too large)."""
        text: str | None = message.get("text")
        if text is None:
            await self._session.outbox.put(
                protocol.error_event(
                    EventError("Send events as JSON text frames; binary frames are not read.", code="invalid_json")
                )
            )
            return True
        size = utf8_size(text)
        limit = self._settings.realtime_max_event_bytes
        if size > limit:
            error = EventError(
                f"An event of {size} bytes is larger than this server accepts ({limit} bytes, "
                "REALTIME_MAX_EVENT_BYTES). Append audio in smaller pieces, e.g. 100 ms each.",
                code="event_too_large",
            )
            await self._socket.send(protocol.error_event(error))
            await self._socket.close(CLOSE_TOO_BIG, f"event larger than {limit} bytes")
            return False
        try:
            raw = (
                await off_loop(protocol.load_event, text) if size > PARSE_OFF_LOOP_BYTES else protocol.load_event(text)
            )
            await self._session.handle(raw)
        except EventError as error:
            await self._session.outbox.put(protocol.error_event(error))
        except Exception:
            logger.exception("a realtime event failed")
            failure = ApiError("The event failed on the server; it has been logged.", status_code=500)
            await self._session.outbox.put(protocol.error_event(failure))
        return True
