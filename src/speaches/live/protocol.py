"""The wire shapes of a live transcription session (WS /v1/audio/transcriptions).

Client to server: binary frames of raw PCM (16 kHz, mono, int16 little-endian, any size), and the text
frames `{"type": "end"}` after the last one and `{"type": "transcript"}` to ask for the whole transcript so far.

Server to client, by `response_format`. Each update carries only what changed (its size is bounded by the
audio buffer, not by the length of the session), so an hours-long session's traffic grows linearly:

- `text`: the newly confirmed text as a text frame each time it grows (may begin with a space); the frames
  concatenated are the transcript.
- `json` (default): `{"type": "transcript.text.delta", "delta", "unconfirmed"}` on each update, then
  `{"type": "transcript.text.done", "text"}` with the whole transcript.
- `verbose_json`: as `json`, each delta also carrying `words` (the newly confirmed ones, times in seconds
  from the start of the session's audio) and `language`.
- The answer to `{"type": "transcript"}`: `{"type": "transcript.text", "text", "unconfirmed"}` (in every format).
- On any problem: `{"type": "error", "error": {"message", "type", "param", "code"}}`, OpenAI's error shape.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from speaches.errors import ApiError, InvalidRequestError
from speaches.live.session import LiveUpdate

if TYPE_CHECKING:
    # Only annotations: importing faster_whisper at start-up would load CTranslate2 into an idle server.
    from faster_whisper.transcribe import Word

LiveResponseFormat = Literal["text", "json", "verbose_json"]
RESPONSE_FORMATS: Final[tuple[str, ...]] = get_args(LiveResponseFormat)

END_COMMAND: Final = "end"
TRANSCRIPT_COMMAND: Final = "transcript"
COMMANDS: Final = (END_COMMAND, TRANSCRIPT_COMMAND)

# Close codes (RFC 6455 section 7.4.1) and what each means here.
CLOSE_DONE: Final = 1000
"""After `transcript.text.done`, when the client sent `end`."""
CLOSE_IDLE: Final = 1001
"""Nothing received for LIVE_IDLE_TIMEOUT_SECONDS, or the session reached LIVE_MAX_SESSION_SECONDS; the
transcript is finished and sent first, as on `end`."""
CLOSE_REFUSED: Final = 1008
"""Before any audio is taken: missing/wrong API key, unknown model, invalid response_format, task or language."""
CLOSE_TOO_BIG: Final = 1009
"""A frame (binary or text) larger than LIVE_MAX_FRAME_BYTES."""
CLOSE_SERVER_ERROR: Final = 1011
"""The model failed to load or a transcription step failed."""
CLOSE_BUSY: Final = 1013
"""The inference queue is full (the HTTP endpoints answer 429 then)."""


def update_message(update: LiveUpdate, response_format: LiveResponseFormat) -> str | dict[str, Any] | None:
    """The frame for one update (str: a text frame, dict: JSON), or None when this format skips it."""
    if response_format == "text":
        return update.delta or None
    message: dict[str, Any] = {
        "type": "transcript.text.delta",
        "delta": update.delta,
        "unconfirmed": update.unconfirmed,
    }
    if response_format == "verbose_json":
        message["words"] = [word_json(word) for word in update.words]
        message["language"] = update.language
    return message


def done_message(text: str, response_format: LiveResponseFormat) -> str | dict[str, Any] | None:
    """The last message: the whole transcript (in text mode the frames so far already spell it out)."""
    if response_format == "text":
        return None
    return {"type": "transcript.text.done", "text": text}


def transcript_message(text: str, unconfirmed: str) -> dict[str, Any]:
    """The answer to `{"type": "transcript"}`: everything confirmed so far and the tentative tail."""
    return {"type": "transcript.text", "text": text, "unconfirmed": unconfirmed}


def error_message(error: ApiError) -> dict[str, Any]:
    return {"type": "error", **error.body()}


def word_json(word: Word) -> dict[str, Any]:
    return {"word": word.word.strip(), "start": round(word.start, 3), "end": round(word.end, 3)}


def parse_command(text: str) -> str:
    """The command a text frame carries: `end` or `transcript`. Raises InvalidRequestError."""
    try:
        command = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON such as 100,000 "["
        command = None
    kind = command.get("type") if isinstance(command, dict) else None
    if kind not in COMMANDS:
        raise InvalidRequestError(
            'Unknown command. Send audio as binary frames (16 kHz mono 16-bit PCM), {"type": "end"} as a text '
            'frame after the last one, and {"type": "transcript"} to get the whole transcript so far.',
            param="type",
            code="unknown_command",
        )
    return str(kind)
