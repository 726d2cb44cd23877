"""Reading and writing Wyoming events on a stream, with every size and wait bounded.

An event is a JSON header line (`type`, optional `data`, `data_length`, `payload_length`), then
`data_length` bytes of more JSON data, then `payload_length` bytes of binary payload (audio). The
`wyoming` package's own reader trusts both lengths, so one line claiming a 10 GB payload would
make it buffer 10 GB; this reader refuses oversized parts before reading them. Writing uses the
package's framing, under a timeout, so a client that stops reading cannot hold the server forever.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from wyoming.event import Event, Eventable, async_write_event

from speaches.errors import InvalidRequestError

EventableT = TypeVar("EventableT", bound=Eventable)

MAX_HEADER_BYTES = 64 * 1024
"""Longest header line; also the stream reader's buffer limit (pass it as `limit=` to start_server)."""
MAX_DATA_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Largest single payload: 8 minutes of 16 kHz 16-bit audio in one chunk; clients send 100 ms chunks."""


class ProtocolError(Exception):
    """The client sent something that is not a Wyoming event; the stream cannot be trusted after it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientGoneError(Exception):
    """The client disconnected or stopped reading what it asked for."""


async def read_event(
    reader: asyncio.StreamReader, *, max_data_bytes: int = MAX_DATA_BYTES, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> Event | None:
    """The next event, or None when the client closed the connection (also mid-event)."""
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError as error:  # the line outgrew the reader's limit
                raise ProtocolError(f"An event header line is longer than {MAX_HEADER_BYTES} bytes.") from error
            if not line:
                return None
            if line.strip():
                break  # blank lines between events are tolerated
        header = _parse_json_object(line, "header")
        event_type = header.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise ProtocolError("An event header has no 'type'.")
        data = header.get("data") or {}
        if not isinstance(data, dict):
            raise ProtocolError("An event's 'data' must be a JSON object.")
        data_length = _length(header, "data_length", max_data_bytes)
        payload_length = _length(header, "payload_length", max_payload_bytes)
        if data_length:
            data.update(_parse_json_object(await reader.readexactly(data_length), "data"))
        payload = await reader.readexactly(payload_length) if payload_length else None
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return Event(type=event_type, data=data, payload=payload)


async def write_event(event: Event, writer: asyncio.StreamWriter, within_seconds: float) -> None:
    """Send one event; ClientGoneError when the client is gone or has not read it within `within_seconds`."""
    if writer.is_closing():
        raise ClientGoneError
    try:
        async with asyncio.timeout(within_seconds):
            await async_write_event(event, writer)
    except (TimeoutError, ConnectionError) as error:
        raise ClientGoneError from error


def parse(cls: type[EventableT], event: Event) -> EventableT:
    """The typed event; a 400 (not a crash) when the client left out a field or sent the wrong type."""
    try:
        parsed = cls.from_event(event)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InvalidRequestError(f"The {event.type} event is malformed ({type(error).__name__}: {error}).") from error
    text = getattr(parsed, "text", "")
    if text is not None and not isinstance(text, str):
        raise InvalidRequestError(f"The {event.type} event's text must be a string.", param="text")
    return parsed  # type: ignore[return-value]


def _parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"An event {what} is not valid JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise ProtocolError(f"An event {what} must be a JSON object.")
    return parsed


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"An event's '{key}' must be a non-negative integer.")
    if value > limit:
        raise ProtocolError(f"An event's {key} of {value} bytes is over this server's limit of {limit} bytes.")
    return value
