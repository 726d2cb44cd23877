"""An accepted WebSocket of a long session (live transcription, Realtime API): serialised sends and one close.

Sends are serialised so that a session's worker tasks and its receive loop never interleave frames, and
nothing is sent after the close. A send that the client does not take within `SEND_TIMEOUT_SECONDS` (it has
stopped reading, and TCP flow control has filled up) ends the session: without a bound, such a client would
hold its session, its model lease and its queued work forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final

from fastapi import WebSocket, WebSocketDisconnect
from starlette import status

logger = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS: Final = 30.0
CLOSE_NOT_READING: Final = status.WS_1008_POLICY_VIOLATION
_MAX_CLOSE_REASON_BYTES = 123  # what fits in a close frame after the two-byte code


class SessionSocket:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._send_lock = asyncio.Lock()
        self.closed = False

    async def send(self, message: str | dict[str, Any]) -> None:
        """Send a text frame (a dict as JSON); does nothing once the socket is closed."""
        text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        async with self._send_lock:
            if self.closed:
                return
            try:
                await asyncio.wait_for(self.websocket.send_text(text), SEND_TIMEOUT_SECONDS)
            except WebSocketDisconnect:
                self.closed = True
            except TimeoutError:
                logger.info("the client took nothing for %g s; closing its session", SEND_TIMEOUT_SECONDS)
                await self._close(CLOSE_NOT_READING, f"client stopped reading for {SEND_TIMEOUT_SECONDS:g} s")

    async def close(self, code: int, reason: str) -> None:
        async with self._send_lock:
            await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, TimeoutError):
            await asyncio.wait_for(self.websocket.close(code, close_reason(reason)), SEND_TIMEOUT_SECONDS)


def close_reason(message: str) -> str:
    """`message` cut to what a close frame can carry, on a character boundary."""
    encoded = message.encode()
    if len(encoded) <= _MAX_CLOSE_REASON_BYTES:
        return message
    return encoded[: _MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


def utf8_size(text: str) -> int:
    """The size of a text frame: an ASCII string's length is its UTF-8 size, known without encoding it."""
    return len(text) if text.isascii() else len(text.encode())
