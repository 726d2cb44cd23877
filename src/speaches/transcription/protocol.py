"""The OpenAI wire shapes of /v1/audio/transcriptions and /v1/audio/translations (plain pydantic).

The request forms, which carry an upload, are in `forms.py`, beside the router. Responses mirror the SDK's
`Transcription`, `TranscriptionVerbose`, `TranslationVerbose`, `TranscriptionSegment`,
`TranscriptionWord` and the streaming `TranscriptionTextDeltaEvent` / `TranscriptionTextDoneEvent`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
TimestampGranularity = Literal["segment", "word"]
Task = Literal["transcribe", "translate"]
Include = Literal["logprobs"]

# --- requests ---


class ServerVadChunking(BaseModel):
    """OpenAI's `chunking_strategy={"type": "server_vad", ...}`, with OpenAI's defaults for what is left out.

    Mapped onto the Silero VAD that faster-whisper runs before decoding (see `vad_options`).
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad"]
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000, description="Audio kept before each speech chunk.")
    silence_duration_ms: int = Field(
        default=200, ge=0, le=60_000, description="Silence that ends a speech chunk; shorter pauses stay inside it."
    )
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Speech probability above which audio is speech.")

    def vad_options(self) -> dict[str, float]:
        """The same request in the terms of faster-whisper's `VadOptions`."""
        return {
            "threshold": self.threshold,
            "speech_pad_ms": self.prefix_padding_ms,
            "min_silence_duration_ms": self.silence_duration_ms,
        }


ChunkingStrategy = Literal["auto"] | ServerVadChunking

# --- responses ---


class Word(BaseModel):
    word: str
    start: float
    end: float


class Segment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class Logprob(BaseModel):
    """One token of the transcript with the log probability the decoder gave it (OpenAI's `Logprob`)."""

    token: str
    logprob: float
    bytes: list[int]
    """The token's UTF-8 bytes; one character may span two tokens, whose `token` then shows U+FFFD."""


class TranscriptionJson(BaseModel):
    text: str
    logprobs: list[Logprob] | None = None
    usage: DurationUsage


class TranscriptionVerboseJson(BaseModel):
    task: Task
    language: str
    duration: float
    text: str
    segments: list[Segment] | None = None
    words: list[Word] | None = None
    usage: DurationUsage


class TextDeltaEvent(BaseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str
    logprobs: list[Logprob] | None = None


class TextDoneEvent(BaseModel):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    logprobs: list[Logprob] | None = None
    usage: DurationUsage
