"""The wire shapes of a live transcription session (WS /v1/audio/transcriptions).

Client to server: binary frames of raw PCM (16 kHz, mono, int16 little-endian, any size), and the text
frame `{"type": "end"}` after the last one.

Server to client, by `response_format`:

- `text`: the whole confirmed transcript as a text frame each time it grows; the last frame before the
  close is the final transcript.
- `json` (default): `{"type": "transcript.text.delta", "delta", "text", "unconfirmed"}` on each update,
  then `{"type": "transcript.text.done", "text"}`.
- `verbose_json`: as `json`, each delta also carrying `words` (the newly confirmed ones, times in seconds
  from the start of the session's audio) and `language`.
- On any problem: `{"type": "error", "error": {"message", "type", "param", "code"}}`, OpenAI's error shape.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from starlette import status

from speaches.errors import ApiError, InvalidRequestError
from speaches.live.session import LiveUpdate

if TYPE_CHECKING:
    # Only annotations: importing faster_whisper at start-up would load CTranslate2 into an idle server.
    from faster_whisper.transcribe import Word

LiveResponseFormat = Literal["text", "json", "verbose_json"]
RESPONSE_FORMATS: Final[tuple[str, ...]] = get_args(LiveResponseFormat)

END_COMMAND: Final = "end"

# Close codes (RFC 6455 section 7.4.1) and what each means here.
CLOSE_DONE: Final = status.WS_1000_NORMAL_CLOSURE
"""After `transcript.text.done`, when the client sent `end`."""
CLOSE_IDLE: Final = status.WS_1001_GOING_AWAY
"""Nothing received for LIVE_IDLE_TIMEOUT_SECONDS; the transcript is finished and sent first, as on `end`."""
CLOSE_REFUSED: Final = status.WS_1008_POLICY_VIOLATION
"""Before any audio is taken: missing/wrong API key, unknown model, invalid response_format or language."""
CLOSE_TOO_BIG: Final = status.WS_1009_MESSAGE_TOO_BIG
"""A frame larger than LIVE_MAX_FRAME_BYTES."""
CLOSE_SERVER_ERROR: Final = status.WS_1011_INTERNAL_ERROR
"""The model failed to load or a transcription step failed."""
CLOSE_BUSY: Final = status.WS_1013_TRY_AGAIN_LATER
"""The inference queue is full (the HTTP endpoints answer 429 then)."""

_MAX_CLOSE_REASON_BYTES = 123  # what fits in a close frame after the two-byte code


def update_message(update: LiveUpdate, response_format: LiveResponseFormat) -> str | dict[str, Any] | None:
    """The frame for one update (str: a text frame, dict: JSON), or None when this format skips it."""
    if response_format == "text":
        return update.text if update.delta else None
    message: dict[str, Any] = {
        "type": "transcript.text.delta",
        "delta": update.delta,
        "text": update.text,
        "unconfirmed": update.unconfirmed,
    }
    if response_format == "verbose_json":
        message["words"] = [word_json(word) for word in update.words]
        message["language"] = update.language
    return message


def done_message(text: str, response_format: LiveResponseFormat) -> str | dict[str, Any]:
    if response_format == "text":
        return text
    return {"type": "transcript.text.done", "text": text}


def error_message(error: ApiError) -> dict[str, Any]:
    return {"type": "error", **error.body()}


def word_json(word: Word) -> dict[str, Any]:
    return {"word": word.word.strip(), "start": round(word.start, 3), "end": round(word.end, 3)}


def parse_command(text: str) -> str:
    """The command a text frame carries; only `{"type": "end"}` exists. Raises InvalidRequestError."""
    try:
        command = json.loads(text)
    except ValueError:
        command = None
    if not isinstance(command, dict) or command.get("type") != END_COMMAND:
        raise InvalidRequestError(
            'Unknown command. Send audio as binary frames (16 kHz mono 16-bit PCM) and {"type": "end"} '
            "as a text frame after the last one.",
            param="type",
            code="unknown_command",
        )
    return END_COMMAND


def close_reason(message: str) -> str:
    """`message` cut to what a close frame can carry, on a character boundary."""
    encoded = message.encode()
    if len(encoded) <= _MAX_CLOSE_REASON_BYTES:
        return message
    return encoded[: _MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."
