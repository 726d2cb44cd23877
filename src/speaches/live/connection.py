"""One live session's WebSocket: the receive loop, the worker that sends the transcriber's updates, the close.

The router checks the request and leases the model; this module runs the accepted socket until the
transcript is done or the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import WebSocket

from speaches import metrics
from speaches.config import Settings
from speaches.errors import ApiError, InvalidRequestError
from speaches.inference import PoolBusyError
from speaches.live import protocol
from speaches.live.protocol import LiveResponseFormat
from speaches.live.session import LiveTranscriber
from speaches.live.socket import SessionSocket, utf8_size

logger = logging.getLogger(__name__)


class LiveConnection:
    """An accepted live-transcription socket."""

    def __init__(self, websocket: WebSocket, settings: Settings) -> None:
        self._websocket = websocket
        self._socket = SessionSocket(websocket)
        self._settings = settings
        # How the session ends once the transcript is done: changed by the idle timeout.
        self._final_close = (protocol.CLOSE_DONE, "transcript complete")

    async def refuse(self, error: ApiError) -> None:
        """Send the error, then close: 1008 for the client's mistakes, 1013 when busy, 1011 for ours."""
        if isinstance(error, PoolBusyError):
            code = protocol.CLOSE_BUSY
        elif error.status_code >= 500:
            code = protocol.CLOSE_SERVER_ERROR
        else:
            code = protocol.CLOSE_REFUSED
        await self.send(protocol.error_message(error))
        await self.close(code, error.message)

    async def serve(self, transcriber: LiveTranscriber, response_format: LiveResponseFormat) -> None:
        """Run the session until the transcript is done or the client leaves."""
        worker = asyncio.create_task(self._transcribe(transcriber, response_format), name="live transcription")
        try:
            await self._receive(transcriber)
        finally:
            # The client left (or broke a rule): no new step starts; one in flight ends in its thread.
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            metrics.record_audio_seconds("live", transcriber.received_seconds)

    async def _receive(self, transcriber: LiveTranscriber) -> None:
        idle_timeout = self._settings.live_idle_timeout_seconds
        max_session = self._settings.live_max_session_seconds
        deadline = asyncio.get_running_loop().time() + max_session
        while not self._socket.closed:
            # Backpressure: while enough audio waits for a step, the next frame is not read at all.
            await transcriber.wait_for_room()
            if self._socket.closed:
                return
            # After `end` the client may stay silent while the last steps run: no time limit then.
            left = deadline - asyncio.get_running_loop().time()
            timeout = None if transcriber.ended else min(idle_timeout, max(left, 0.0))
            try:
                message = await asyncio.wait_for(self._websocket.receive(), timeout)
            except TimeoutError:
                if left <= idle_timeout:
                    self._final_close = (
                        protocol.CLOSE_IDLE,
                        f"session time limit: {max_session:g} s reached (LIVE_MAX_SESSION_SECONDS)",
                    )
                else:
                    self._final_close = (protocol.CLOSE_IDLE, f"idle timeout: nothing received for {idle_timeout:g} s")
                transcriber.end()
                continue
            if message["type"] == "websocket.disconnect":
                self._socket.closed = True
                return
            if not await self._take(message, transcriber):
                return

    async def _take(self, message: dict[str, Any], transcriber: LiveTranscriber) -> bool:
        """Act on one frame; False when it ended the session (a frame too large)."""
        data: bytes | None = message.get("bytes")
        text: str | None = message.get("text")
        size = len(data) if data is not None else utf8_size(text or "")
        max_frame = self._settings.live_max_frame_bytes
        if size > max_frame:
            await self.send(
                protocol.error_message(
                    ApiError(
                        f"A frame of {size} bytes is larger than this server accepts ({max_frame} bytes, "
                        "LIVE_MAX_FRAME_BYTES). Send audio in smaller frames, e.g. 100 ms (3200 bytes).",
                        code="frame_too_large",
                    )
                )
            )
            await self.close(protocol.CLOSE_TOO_BIG, f"frame larger than {max_frame} bytes")
            return False
        try:
            command = protocol.parse_command(text) if text is not None else None
            if command == protocol.TRANSCRIPT_COMMAND:
                await self.send(protocol.transcript_message(transcriber.text, transcriber.unconfirmed_text))
            elif transcriber.ended:
                raise InvalidRequestError("The stream has ended; nothing more is accepted.", code="stream_ended")
            elif data is not None:
                transcriber.feed(data)
            elif command == protocol.END_COMMAND:
                transcriber.end()
        except ApiError as error:
            await self.send(protocol.error_message(error))
        return True

    async def _transcribe(self, transcriber: LiveTranscriber, response_format: LiveResponseFormat) -> None:
        try:
            async for update in transcriber.updates():
                message = protocol.update_message(update, response_format)
                if message is not None:
                    await self.send(message)
        except ApiError as error:
            await self.refuse(error)
            return
        except Exception:
            logger.exception("live transcription step failed")
            await self.refuse(
                ApiError("The live transcription failed on the server; it has been logged.", status_code=500)
            )
            return
        done = protocol.done_message(transcriber.text, response_format)
        if done is not None:
            await self.send(done)
        await self.close(*self._final_close)

    async def send(self, message: str | dict[str, Any]) -> None:
        await self._socket.send(message)

    async def close(self, code: int, reason: str) -> None:
        await self._socket.close(code, reason)
