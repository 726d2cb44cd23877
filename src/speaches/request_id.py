"""The id of the request being served, for log lines and the `X-Request-Id` response header.

`RequestIdMiddleware` (in middleware.py) sets :data:`current_request_id` for each HTTP request and
WebSocket session. Every log record then carries it as ``record.request_id`` ("-" outside a request),
so the log format can print it. `asyncio.to_thread` and the inference pool run their work in a
copy of the caller's context, so log lines from those worker threads carry it too.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

REQUEST_ID_HEADER = "x-request-id"
NO_REQUEST = "-"

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("speaches_request_id", default=NO_REQUEST)

# What we accept from a client: a proxy's or tracer's id (UUID, ULID, hex trace id, "abc-123.4").
# Anything else (too long, spaces, control characters, log-injection attempts) is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def request_id_from(incoming: str | None) -> str:
    """The client's id when it is sane, otherwise a fresh random one."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def install_request_id_logging() -> None:
    """Give every log record a ``request_id`` attribute, whoever logs it and whichever handler formats it.

    A record factory rather than a handler filter, because a filter only sees records of the
    handlers it is attached to, and uvicorn, pytest and basicConfig each bring their own. Idempotent.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "adds_request_id", False):
        return

    def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = current_request_id.get()
        return record

    make_record.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
