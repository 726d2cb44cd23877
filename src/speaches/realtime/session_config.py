"""A Realtime transcription session's settings: what `session.update` may set, checked, and how they show.

The effective settings live in one `SessionConfig`; `checked_format` and `turn_detection_settings` turn the
client's `audio.input.format` and `audio.input.turn_detection` into their effective values (defaults filled
in), refusing with an `EventError` what this server cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speaches.models.catalog import ModelRef
from speaches.realtime import protocol
from speaches.realtime.audio_input import InputFormat
from speaches.realtime.protocol import EventError
from speaches.realtime.vad import VadSettings

PCM_RATES = frozenset({8_000, 16_000, 24_000, 32_000, 44_100, 48_000})
SEMANTIC_SILENCE_MS = {"low": 1_200, "medium": 800, "auto": 800, "high": 500}
"""Semantic VAD is approximated by server VAD waiting longer or shorter for the end of a turn."""
DEFAULT_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
}


@dataclass
class SessionConfig:
    """The session's effective settings, as `session.created` / `session.updated` show them."""

    format: dict[str, Any]
    model: str
    """As the client named it (echoed back)."""
    model_ref: ModelRef
    language: str | None
    prompt: str
    turn_detection: dict[str, Any] | None
    noise_reduction: dict[str, Any] | None = None
    include: list[str] | None = None

    @property
    def input_format(self) -> InputFormat:
        kind = self.format["type"]
        if kind == "audio/pcm":
            return InputFormat("pcm16", int(self.format.get("rate") or 24_000))
        return InputFormat("pcmu" if kind == "audio/pcmu" else "pcma", 8_000)

    @property
    def vad(self) -> VadSettings | None:
        if self.turn_detection is None:
            return None
        return VadSettings(
            threshold=self.turn_detection["threshold"],
            prefix_padding_ms=self.turn_detection["prefix_padding_ms"],
            silence_duration_ms=self.turn_detection["silence_duration_ms"],
        )

    @property
    def logprobs(self) -> bool:
        return protocol.LOGPROBS_INCLUDE in (self.include or ())

    def session_object(self, session_id: str, expires_at: int) -> dict[str, Any]:
        """The session as `session.created` and `session.updated` show it."""
        config = self
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "type": "transcription",
            "expires_at": expires_at,
            "audio": {
                "input": {
                    "format": config.format,
                    "transcription": {"model": config.model, "language": config.language, "prompt": config.prompt},
                    "turn_detection": config.turn_detection,
                    "noise_reduction": config.noise_reduction,
                }
            },
            "include": config.include,
        }


def checked_format(audio_format: protocol.AudioFormat | None) -> dict[str, Any]:
    param = "session.audio.input.format"
    if audio_format is None:
        return {"type": "audio/pcm", "rate": 24_000}
    if audio_format.type == "audio/pcm":
        rate = audio_format.rate or 24_000
        if rate not in PCM_RATES:
            raise EventError(
                f"Unsupported sample rate {rate} for audio/pcm; use 24000 (or one of "
                f"{', '.join(str(r) for r in sorted(PCM_RATES))}).",
                param=f"{param}.rate",
                code="invalid_value",
            )
        return {"type": "audio/pcm", "rate": rate}
    if audio_format.rate not in (None, 8_000):
        raise EventError(
            f"{audio_format.type} is G.711 at 8000 Hz; rate {audio_format.rate} is not possible.",
            param=f"{param}.rate",
            code="invalid_value",
        )
    return {"type": audio_format.type}


def turn_detection_settings(turn_detection: protocol.ServerVad | protocol.SemanticVad | None) -> dict[str, Any] | None:
    if turn_detection is None:
        return None
    if isinstance(turn_detection, protocol.SemanticVad):
        silence = SEMANTIC_SILENCE_MS[turn_detection.eagerness or "auto"]
        return {**DEFAULT_VAD, "silence_duration_ms": silence} | {
            "type": "semantic_vad",
            "eagerness": turn_detection.eagerness or "auto",
        }
    given = turn_detection.model_dump(exclude_none=True, exclude={"create_response", "interrupt_response"})
    return {**DEFAULT_VAD, **given}
