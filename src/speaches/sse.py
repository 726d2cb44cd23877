"""Server-sent events framing, shared by streamed transcriptions, streamed speech and streamed chat completions."""

from __future__ import annotations

import json

from pydantic import BaseModel

from speaches.errors import ApiError


def sse_event(event: BaseModel) -> str:
    """One event as a single `data:` line (JSON escapes any newline inside it); fields left unset (None) are
    left out, as OpenAI leaves them out (`logprobs` only when asked for)."""
    return f"data: {event.model_dump_json(exclude_none=True)}\n\n"


def sse_error(error: ApiError) -> str:
    """An error after the stream started, in OpenAI's error shape: the `openai` SDK raises it as an APIError."""
    return f"data: {json.dumps(error.body())}\n\n"


def sse_json(payload: object) -> str:
    """Any JSON value as one event: chunks relayed from another server as they came."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"
"""The end of an OpenAI chat completion stream."""
