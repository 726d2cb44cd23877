"""Server-sent events framing, shared by streamed transcriptions and streamed speech."""

from __future__ import annotations

import json

from pydantic import BaseModel

from speaches.errors import ApiError


def sse_event(event: BaseModel) -> str:
    """One event as a single `data:` line (JSON escapes any newline inside it)."""
    return f"data: {event.model_dump_json()}\n\n"


def sse_error(error: ApiError) -> str:
    """An error after the stream started, in OpenAI's error shape: the `openai` SDK raises it as an APIError."""
    return f"data: {json.dumps(error.body())}\n\n"
