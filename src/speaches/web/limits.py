"""Limits on what one request may hold: its body's size, all bodies together, and a response's wait for its reader."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from speaches.config import Settings
from speaches.errors import error_body

logger = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Bound what request bodies hold: each one by its kind, and all of them together.

    A `multipart/form-data` upload may be up to MAX_UPLOAD_BYTES; every other body (JSON, which is
    parsed on the event loop, and anything else) up to MAX_JSON_BODY_BYTES; larger ones get 413. A
    declared Content-Length is checked up front; a chunked body is counted as it streams in and cut
    off the moment it passes the limit.

    All bodies together may hold at most MAX_PENDING_UPLOAD_BYTES, counted from the first byte until the
    request is done (its upload spooled, waiting for a slot and transcribed): past it a request gets
    429 with `Retry-After`, so uploads queued for inference cannot fill the disk or the memory.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_upload_bytes = settings.max_upload_bytes
        self.max_other_bytes = settings.max_json_body_bytes
        self.max_pending_bytes = settings.max_pending_upload_bytes
        self.pending_bytes = 0
        """Bytes of bodies held by requests in progress."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        is_upload = headers.get("content-type", "").lower().startswith("multipart/form-data")
        limit, setting = (
            (self.max_upload_bytes, "MAX_UPLOAD_BYTES") if is_upload else (self.max_other_bytes, "MAX_JSON_BODY_BYTES")
        )
        try:
            declared = max(int(headers.get("content-length", "0")), 0)
        except ValueError:
            declared = 0
        if declared > limit:
            await _refuse_too_large(send, limit, setting, is_upload)
            return
        reserved = 0

        def reserve(size: int) -> bool:
            nonlocal reserved
            if self.pending_bytes + size > self.max_pending_bytes:
                return False
            self.pending_bytes += size
            reserved += size
            return True

        if declared and not reserve(declared):
            await _refuse_too_many_uploads(send)
            return
        received = 0
        response_started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                over_limit = received > limit
                if over_limit or (received > reserved and not reserve(received - reserved)):
                    # Answer here and now, then tell the app the client is gone: raising instead
                    # would reach the app's body parser, which turns any failure into its own 400.
                    refused = True
                    if not response_started:
                        if over_limit:
                            await _refuse_too_large(send, limit, setting, is_upload)
                        else:
                            await _refuse_too_many_uploads(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the client has its 413 or 429; the app's answer to a cut-off body is dropped
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        finally:
            self.pending_bytes -= reserved


async def _refuse_too_large(send: Send, limit: int, setting: str, is_upload: bool) -> None:
    what = "upload" if is_upload else "request body (anything but a multipart/form-data upload)"
    message = f"The {what} is larger than this server accepts ({_mib(limit)}, {setting})."
    body = error_body(message, "invalid_request_error", "file" if is_upload else None, "request_too_large")
    await _send_error(send, 413, body)


async def _refuse_too_many_uploads(send: Send) -> None:
    message = (
        "The server holds as many uploads as it accepts at once (MAX_PENDING_UPLOAD_BYTES); retry when some "
        "have been processed."
    )
    body = error_body(message, "rate_limit_error", None, "too_many_pending_uploads")
    await _send_error(send, 429, body, retry_after=5)


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


async def _send_error(send: Send, status: int, body: dict[str, object], *, retry_after: int | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


ABORT_CONNECTION = "speaches.abort_connection"
"""Scope key: a callable that drops the request's connection at once (see `connection_abort`), or None."""


def connection_abort(send: Send) -> Callable[[], None] | None:
    """How to drop a connection without flushing what is buffered for it, from the server's own `send`.

    uvicorn's `send` is a method of the connection's request cycle, which holds the asyncio transport.
    Closing a transport waits until its buffer is written, which for a client that stopped reading is
    never; aborting it frees the connection now. None on a server that does not expose it.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None


class ClientStalledError(Exception):
    """A response write waited longer than SEND_TIMEOUT_SECONDS for the client to read."""


class SendTimeoutMiddleware:
    """End a response whose client stopped reading, so it gives back what it holds.

    uvicorn has no write timeout: a client that never reads keeps its response, and the model lease
    and memory behind it, for as long as it keeps the connection open. Here every write of a response
    may wait at most SEND_TIMEOUT_SECONDS; past that the write fails inside the app (which closes its
    streams and releases its model on the way out) and the connection is dropped. A client that reads
    slowly but steadily never waits that long for one write: the socket's buffers drain as it reads.
    """

    def __init__(self, app: ASGIApp, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stalled: ClientStalledError | None = None

        async def timed_send(message: Message) -> None:
            nonlocal stalled
            if stalled is not None:
                raise stalled
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    await send(message)
            except TimeoutError:
                stalled = ClientStalledError(f"the client read nothing for {self.timeout_seconds:g} s")
                raise stalled from None

        try:
            await self.app(scope, receive, timed_send)
        except Exception as error:
            if stalled is None or not _involves(error, stalled):
                raise
        if stalled is not None:
            logger.info("%s; ended its response and dropped the connection", stalled)
            abort = scope.get(ABORT_CONNECTION)
            if abort is not None:
                abort()
                # Let the server see the connection go before it checks how the response ended.
                await asyncio.sleep(0)


def _involves(error: BaseException, target: BaseException) -> bool:
    """Whether `error` is `target`, was caused by it, or groups it."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is target:
            return True
        if id(current) in seen:
            continue
        seen.add(id(current))
        pending.extend(item for item in (current.__cause__, current.__context__) if item is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
    return False
