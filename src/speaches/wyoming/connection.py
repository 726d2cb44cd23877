"""One Wyoming client connection: its events in, answers out, through the server's shared services.

Events are read one at a time and answered in order: `describe` -> `info`, `ping` -> `pong`, the
speech-to-text events to :class:`~speaches.wyoming.listening.SpeechToText`, the synthesis events to
:class:`~speaches.wyoming.speaking.TextToSpeech`; unknown events are dropped, as the protocol asks.
Both run on the HTTP API's machinery: the catalog, the model manager's leases, the inference pool
(with its queue limit), the same work functions and their metrics.

A request that fails is answered with an `error` event carrying the HTTP API's error code, and the
connection stays usable; only a stream that cannot be parsed any more is closed. A connection that
sends nothing, or reads nothing, for WYOMING_IDLE_TIMEOUT_SECONDS is closed. Whatever a connection
holds (leases, pool work, spooled audio) ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong

from speaches.errors import ApiError
from speaches.request_id import current_request_id, request_id_from
from speaches.state import AppState
from speaches.wyoming import listening, metrics, speaking
from speaches.wyoming.framing import ClientGoneError, ProtocolError, parse, read_event, write_event
from speaches.wyoming.info import describe_server

logger = logging.getLogger(__name__)


class Connection:
    def __init__(self, state: AppState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.state = state
        self._reader = reader
        self._writer = writer
        self._timeout = state.settings.wyoming_idle_timeout_seconds
        self._speech_to_text = listening.SpeechToText(state, self._send)
        self._text_to_speech = speaking.TextToSpeech(state, self._send)

    async def serve(self) -> None:
        current_request_id.set(request_id_from(None))
        try:
            while True:
                try:
                    # A timeout scope, not wait_for: no task per event (a voice command is hundreds of chunks).
                    async with asyncio.timeout(self._timeout):
                        event = await read_event(self._reader)
                except TimeoutError:
                    logger.info("closing a Wyoming connection that sent nothing for %.0f s", self._timeout)
                    return
                except ProtocolError as error:
                    logger.info("closing a Wyoming connection after a malformed event: %s", error.message)
                    await self._send(Error(text=error.message, code="invalid_event").event())
                    return
                if event is None:
                    return
                await self._handle(event)
        except ClientGoneError:
            logger.info("a Wyoming client disconnected or stopped reading; its work was stopped")
        finally:
            self._speech_to_text.close()
            self._text_to_speech.close()
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    async def _handle(self, event: Event) -> None:
        handler = (
            self._speech_to_text
            if event.type in listening.EVENTS
            else self._text_to_speech
            if event.type in speaking.EVENTS
            else None
        )
        try:
            if handler is not None:
                await handler.handle(event)
            elif Describe.is_type(event.type):
                await self._describe()
            elif Ping.is_type(event.type):
                await self._send(Pong(text=parse(Ping, event).text).event())
            else:
                logger.debug("ignoring a Wyoming %s event", event.type)
        except ClientGoneError:
            raise  # nobody to answer: the connection ends
        except Exception as error:
            if isinstance(error, ApiError):
                message, code = error.message, error.code or error.error_type
                if error.status_code >= 500:
                    logger.error("Wyoming %s failed: %s", event.type, message)
            else:
                logger.exception("Wyoming %s failed", event.type)
                message, code = "The server hit an internal error. It has been logged.", "server_error"
            if handler is not None:
                handler.fail(event.type)
            elif Describe.is_type(event.type):
                metrics.record_request("describe", "error")
            await self._send(Error(text=message, code=code).event())

    async def _describe(self) -> None:
        info = await asyncio.to_thread(describe_server, self.state.catalog)
        await self._send(info.event())
        metrics.record_request("describe", "ok")

    async def _send(self, event: Event) -> None:
        await write_event(event, self._writer, self._timeout)
