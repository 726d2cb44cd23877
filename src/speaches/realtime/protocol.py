"""The OpenAI Realtime API's GA event shapes, as the official SDKs send and expect them (plain pydantic).

Client events are parsed strictly, as OpenAI does: an unknown field is an error naming its path
(`session.audio.input.foo`), not silently ignored, so a typo does not pass for a setting. Server events are
built with the same field names and nullability as the SDK's models (openai.types.realtime).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speaches.errors import ApiError, InvalidRequestError

NoiseReductionType = Literal["near_field", "far_field"]
LOGPROBS_INCLUDE = "item.input_audio_transcription.logprobs"


class _ClientModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- transcription sessions: client events ---


class AudioFormat(_ClientModel):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None


class TranscriptionSettings(_ClientModel):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    # Accepted for compatibility with OpenAI's newer models; Whisper takes one language, and no keywords.
    languages: list[str] | None = None
    keywords: list[str] | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class ServerVad(_ClientModel):
    type: Literal["server_vad"]
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    prefix_padding_ms: Annotated[int, Field(ge=0, le=10_000)] | None = None
    silence_duration_ms: Annotated[int, Field(ge=0, le=10_000)] | None = None
    idle_timeout_ms: Annotated[int, Field(ge=5_000, le=30 * 60_000)] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


class SemanticVad(_ClientModel):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class NoiseReduction(_ClientModel):
    type: NoiseReductionType | None = None
    strength: float | None = None


class AudioInput(_ClientModel):
    format: AudioFormat | None = None
    transcription: TranscriptionSettings | None = None
    turn_detection: TurnDetection | None = None
    noise_reduction: NoiseReduction | None = None


class TranscriptionAudio(_ClientModel):
    input: AudioInput | None = None


class TranscriptionSessionUpdate(_ClientModel):
    type: Literal["transcription"]
    audio: TranscriptionAudio | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


class SessionUpdate(_ClientModel):
    type: Literal["session.update"]
    event_id: str | None = None
    session: TranscriptionSessionUpdate


class InputAudioBufferAppend(_ClientModel):
    type: Literal["input_audio_buffer.append"]
    event_id: str | None = None
    audio: str


class InputAudioBufferCommit(_ClientModel):
    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = None


class InputAudioBufferClear(_ClientModel):
    type: Literal["input_audio_buffer.clear"]
    event_id: str | None = None


TRANSCRIPTION_CLIENT_EVENTS: dict[str, type[_ClientModel]] = {
    "session.update": SessionUpdate,
    "input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": InputAudioBufferCommit,
    "input_audio_buffer.clear": InputAudioBufferClear,
}


# --- translation sessions: client events ---


class TranslationInputTranscription(_ClientModel):
    model: str


class TranslationAudioInput(_ClientModel):
    transcription: TranslationInputTranscription | None = None
    noise_reduction: NoiseReduction | None = None


class TranslationAudioOutput(_ClientModel):
    language: str | None = None


class TranslationAudio(_ClientModel):
    input: TranslationAudioInput | None = None
    output: TranslationAudioOutput | None = None


class TranslationSessionUpdateRequest(_ClientModel):
    audio: TranslationAudio | None = None


class TranslationSessionUpdate(_ClientModel):
    type: Literal["session.update"]
    event_id: str | None = None
    session: TranslationSessionUpdateRequest


class TranslationAppend(_ClientModel):
    type: Literal["session.input_audio_buffer.append"]
    event_id: str | None = None
    audio: str


class TranslationClose(_ClientModel):
    type: Literal["session.close"]
    event_id: str | None = None


TRANSLATION_CLIENT_EVENTS: dict[str, type[_ClientModel]] = {
    "session.update": TranslationSessionUpdate,
    "session.input_audio_buffer.append": TranslationAppend,
    "session.close": TranslationClose,
}


# --- parsing ---


class EventError(InvalidRequestError):
    """A client event that could not be taken; `event_id` names it in the error event."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, event_id: str | None = None):
        super().__init__(message, param=param, code=code)
        self.event_id = event_id


def load_event(text: str) -> dict[str, Any]:
    """A text frame's JSON object. Raises EventError (also for nesting deep enough to exhaust the parser)."""
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as error:
        detail = "it is nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise EventError(
            f"The event is not valid JSON: {detail}. Send each event as one JSON object.", code="invalid_json"
        ) from None
    if not isinstance(event, dict):
        raise EventError("An event must be a JSON object with a 'type'.", code="invalid_json")
    return event


def parse_event(event: dict[str, Any], known: dict[str, type[_ClientModel]]) -> _ClientModel:
    """The typed client event. Raises EventError naming the offending field, as OpenAI's errors do."""
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    kind = event.get("type")
    model = known.get(kind) if isinstance(kind, str) else None
    if model is None:
        shown = json.dumps(kind)[:100] if kind is not None else "nothing"
        raise EventError(
            f"Invalid value: {shown} for 'type'. Supported values are: {', '.join(repr(k) for k in known)}.",
            param="type",
            code="invalid_value" if kind is not None else "missing_required_parameter",
            event_id=event_id,
        )
    try:
        return model.model_validate(event)
    except ValidationError as error:
        message, param, code = describe(error)
        raise EventError(message, param=param, code=code, event_id=event_id) from None


_UNION_TAGS = frozenset({"server_vad", "semantic_vad"})


def describe(error: ValidationError) -> tuple[str, str | None, str]:
    """One OpenAI-style sentence for the first problem: (message, param path, code)."""
    first = error.errors(include_url=False)[0]
    path = ".".join(str(part) for part in first["loc"] if part not in _UNION_TAGS)
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"Unknown parameter: '{path}'.", path, "unknown_parameter"
    if kind == "missing":
        return f"Missing required parameter: '{path}'.", path, "missing_required_parameter"
    shown = json.dumps(first.get("input"), default=str)[:100]
    code = (
        "invalid_value" if kind in {"literal_error", "enum", "union_tag_invalid"} or "than" in kind else "invalid_type"
    )
    return f"Invalid value for '{path}': {shown} ({first['msg']}).", path, code


# --- server events ---


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(error: ApiError, event_id: str | None = None) -> dict[str, Any]:
    """OpenAI's `error` event: the error shape plus the client event it answers."""
    body = error.body()["error"]
    return server_event(
        "error", error={**body, "event_id": event_id if event_id is not None else getattr(error, "event_id", None)}
    )


def expires_at(max_session_seconds: float) -> int:
    return int(time.time() + max_session_seconds)


def user_audio_item(
    item_id: str, transcript: str | None, status: Literal["in_progress", "completed"]
) -> dict[str, Any]:
    """The conversation item a committed buffer becomes (audio itself is never sent back)."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def logprobs_of(words: Any) -> list[dict[str, Any]]:
    """Whisper's word probabilities in the Realtime API's logprob shape: one entry per word."""
    import math

    return [
        {
            "token": word.word,
            "logprob": math.log(max(float(word.probability), 1e-12)),
            "bytes": list(word.word.encode()),
        }
        for word in words
    ]
