"""WS /v1/audio/transcriptions: live transcription of a PCM stream.

The same path answers POST over HTTP (transcription/router.py); Starlette matches a route by the
scope's type, so the two never meet. The messages are described in `speaches.live.protocol`. With API_KEY
set, `ApiKeyMiddleware` has already refused a handshake without the key (HTTP 401) before this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.datastructures import QueryParams

from speaches import metrics
from speaches.config import Settings
from speaches.errors import ApiError, InvalidRequestError
from speaches.inference import PoolBusyError
from speaches.live import protocol
from speaches.live.protocol import LiveResponseFormat
from speaches.live.session import LiveTranscriber, LiveUpdate, Publish
from speaches.state import State
from speaches.transcription.whisper import STT_KIND, stt_model_id

logger = logging.getLogger(__name__)

router = APIRouter()


@router.websocket("/v1/audio/transcriptions")
async def live_transcription(websocket: WebSocket, state: State) -> None:
    """Stream 16 kHz mono int16 PCM in; get the transcript back as it becomes certain."""
    # Accepted first so that every refusal can explain itself in an error message before the close.
    await websocket.accept()
    connection = LiveConnection(websocket, state.settings)
    try:
        request = LiveRequest.from_query(websocket.query_params, state.settings)
        lease = await state.models.acquire(STT_KIND, request.model)
    except ApiError as error:
        await connection.refuse(error)
        return
    try:
        language = request.language_for(lease.model.supported_languages, state.settings)
    except ApiError as error:
        lease.release()
        await connection.refuse(error)
        return
    transcriber = LiveTranscriber(
        lease.model,
        state.pool,
        connection.publisher(request.response_format),
        language=language,
        min_chunk_seconds=state.settings.live_min_chunk_seconds,
    )
    try:
        await connection.serve(transcriber, request.response_format)
    finally:
        # A step abandoned by a client that left still runs in its thread; the model stays leased until it ends.
        transcriber.after_current_step(lease.release)


@dataclass(frozen=True)
class LiveRequest:
    """The query parameters of a session, checked."""

    model: str
    language: str | None
    response_format: LiveResponseFormat

    @classmethod
    def from_query(cls, params: QueryParams, settings: Settings) -> LiveRequest:
        response_format = params.get("response_format") or "json"
        if response_format not in protocol.RESPONSE_FORMATS:
            raise InvalidRequestError(
                f"Unsupported response_format '{response_format}' for live transcription; "
                f"use one of: {', '.join(protocol.RESPONSE_FORMATS)}.",
                param="response_format",
                code="invalid_value",
            )
        language = (params.get("language") or "").strip().lower() or None
        model = stt_model_id(params.get("model"), settings)
        return cls(model=model, language=language, response_format=response_format)  # type: ignore[arg-type]

    def language_for(self, supported: list[str], settings: Settings) -> str | None:
        """The language to transcribe in: the requested one if the model knows it, else DEFAULT_LANGUAGE."""
        if self.language is None:
            default = settings.default_language
            return default if default in supported else None
        if self.language not in supported:
            raise InvalidRequestError(
                f"The model '{self.model}' does not support language '{self.language}'. "
                f"Use an ISO 639-1 code it knows ({', '.join(supported[:12])}{', ...' if len(supported) > 12 else ''})"
                " or leave language out to detect it.",
                param="language",
                code="unsupported_language",
            )
        return self.language


class LiveConnection:
    """One session's socket: the receive loop, and sends serialised so that the worker and the loop never
    interleave (or send after the close)."""

    def __init__(self, websocket: WebSocket, settings: Settings) -> None:
        self._websocket = websocket
        self._settings = settings
        self._send_lock = asyncio.Lock()
        self._closed = False
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

    def publisher(self, response_format: LiveResponseFormat) -> Publish:
        """The callback through which a transcriber sends its updates to this client."""

        async def publish(update: LiveUpdate) -> None:
            message = protocol.update_message(update, response_format)
            if message is not None:
                await self.send(message)

        return publish

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
        max_frame = self._settings.live_max_frame_bytes
        idle_timeout = self._settings.live_idle_timeout_seconds
        while not self._closed:
            try:
                # After `end` the client may stay silent while the last step runs: no idle timeout then.
                message = await asyncio.wait_for(self._websocket.receive(), None if transcriber.ended else idle_timeout)
            except TimeoutError:
                self._final_close = (protocol.CLOSE_IDLE, f"idle timeout: nothing received for {idle_timeout:g} s")
                transcriber.end()
                continue
            if message["type"] == "websocket.disconnect":
                self._closed = True
                return
            data: bytes | None = message.get("bytes")
            text: str | None = message.get("text")
            if data is not None and len(data) > max_frame:
                await self.send(
                    protocol.error_message(
                        ApiError(
                            f"A frame of {len(data)} bytes is larger than this server accepts ({max_frame} bytes, "
                            "LIVE_MAX_FRAME_BYTES). Send audio in smaller frames, e.g. 100 ms (3200 bytes).",
                            code="frame_too_large",
                        )
                    )
                )
                await self.close(protocol.CLOSE_TOO_BIG, f"frame larger than {max_frame} bytes")
                return
            try:
                if transcriber.ended:
                    raise InvalidRequestError("The stream has ended; nothing more is accepted.", code="stream_ended")
                if data is not None:
                    transcriber.feed(data)
                elif text is not None and protocol.parse_command(text) == protocol.END_COMMAND:
                    transcriber.end()
            except ApiError as error:
                await self.send(protocol.error_message(error))

    async def _transcribe(self, transcriber: LiveTranscriber, response_format: LiveResponseFormat) -> None:
        try:
            text = await transcriber.run()
        except ApiError as error:
            await self.refuse(error)
            return
        except Exception:
            logger.exception("live transcription step failed")
            await self.refuse(
                ApiError("The live transcription failed on the server; it has been logged.", status_code=500)
            )
            return
        await self.send(protocol.done_message(text, response_format))
        await self.close(*self._final_close)

    async def send(self, message: str | dict[str, Any]) -> None:
        async with self._send_lock:
            if self._closed:
                return
            try:
                if isinstance(message, str):
                    await self._websocket.send_text(message)
                else:
                    await self._websocket.send_json(message)
            except WebSocketDisconnect:
                self._closed = True

    async def close(self, code: int, reason: str) -> None:
        async with self._send_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self._websocket.close(code, protocol.close_reason(reason))
