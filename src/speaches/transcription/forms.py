"""The multipart request forms of /v1/audio/transcriptions and /v1/audio/translations.

As the `openai` SDK sends them: lists go as repeated `name[]` fields (`timestamp_granularities[]=word`),
objects as one field per key (`chunking_strategy[type]=server_vad`), booleans as `true`/`false`. They
hold the upload itself, so they belong to the HTTP layer.

Every field OpenAI defines is either honoured or refused with a 400 that names it (speaker
diarization: there is no speaker model here). A field nobody defines is refused too, as OpenAI
refuses it ("Unrecognized request argument"), so a misspelt or unsupported option never goes
unseen.
"""

from __future__ import annotations

import json

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from speaches.errors import InvalidRequestError
from speaches.languages import language_code
from speaches.transcription.protocol import (
    ChunkingStrategy,
    Include,
    ResponseFormat,
    ServerVadChunking,
    TimestampGranularity,
)

_DIARIZATION = (
    "Speaker diarization is not available on this server (it has no speaker model): "
    "use json, text, srt, vtt or verbose_json without known speakers."
)


class _AudioForm(BaseModel):
    """Fields both endpoints share."""

    model_config = ConfigDict(extra="forbid")

    file: UploadFile = Field(description="The audio: any container and codec FFmpeg reads (mp3, wav, flac, ogg, ...).")
    model: str = Field(
        description="A whisper model id, e.g. `Systran/faster-whisper-base`; `whisper-1` means the default model."
    )
    prompt: str | None = Field(default=None, description="Text to guide the style or continue a previous segment.")
    response_format: ResponseFormat = Field(
        default="json", description="`json`, `text`, `srt`, `vtt` or `verbose_json` (`diarized_json` is refused)."
    )
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Sampling temperature; decoding falls back to higher temperatures from here when it fails.",
    )
    stream: bool = Field(
        default=False,
        description="Answer with server-sent events (`transcript.text.delta`, then `transcript.text.done`).",
    )
    include: list[Include] = Field(
        default_factory=list,
        alias="include[]",
        description=(
            "`logprobs`: the log probability of every token of the transcript (json and streamed answers only)."
        ),
    )
    chunking_strategy: str | None = Field(
        default=None,
        description=(
            "`auto`: drop non-speech with the VAD before decoding. Or a `server_vad` object, as the SDK sends it "
            "(`chunking_strategy[type]=server_vad`, `chunking_strategy[threshold]=0.5`, ...) or as one JSON string, "
            "whose `threshold`, `prefix_padding_ms` and `silence_duration_ms` tune that VAD. Unset: no VAD "
            "(see `vad_filter`)."
        ),
    )
    chunking_type: str | None = Field(default=None, alias="chunking_strategy[type]", description="`server_vad`.")
    chunking_prefix_padding_ms: str | None = Field(
        default=None, alias="chunking_strategy[prefix_padding_ms]", description="Speech padding (default 300 ms)."
    )
    chunking_silence_duration_ms: str | None = Field(
        default=None,
        alias="chunking_strategy[silence_duration_ms]",
        description="Silence that ends a speech chunk (default 200 ms).",
    )
    chunking_threshold: str | None = Field(
        default=None, alias="chunking_strategy[threshold]", description="Speech probability threshold (default 0.5)."
    )
    keywords: list[str] = Field(
        default_factory=list,
        alias="keywords[]",
        description="Words or names the model should favour (passed to the decoder as `hotwords`).",
    )
    hotwords: str | None = Field(default=None, description="Extension: words or phrases the model should favour.")
    vad_filter: bool | None = Field(
        default=None,
        description=(
            "Extension: drop non-speech with the Silero VAD before decoding. Unset: on in batched mode, off otherwise; "
            "`false` also turns batched mode off for the request."
        ),
    )
    known_speaker_names: list[str] = Field(
        default_factory=list, alias="known_speaker_names[]", description="Not supported here (no speaker model): 400."
    )
    known_speaker_references: list[str] = Field(
        default_factory=list,
        alias="known_speaker_references[]",
        description="Not supported here (no speaker model): 400.",
    )

    @field_validator("response_format", mode="before")
    @classmethod
    def _no_diarization(cls, value: object) -> object:
        if value == "diarized_json":
            raise PydanticCustomError("unsupported", f"diarized_json is not supported. {_DIARIZATION}")
        return value

    def check_supported(self) -> None:
        """Refuse what the form can carry but this server cannot do, with a 400 naming the field."""
        if self.known_speaker_names or self.known_speaker_references:
            param = "known_speaker_names" if self.known_speaker_names else "known_speaker_references"
            raise InvalidRequestError(f"'{param}' is not supported. {_DIARIZATION}", param=param)
        if self.include and (self.response_format != "json" and not self.stream):
            raise InvalidRequestError(
                f"include[]=logprobs needs response_format=json (or stream=true); "
                f"response_format={self.response_format} cannot carry them.",
                param="include",
            )

    def hotword_text(self) -> str | None:
        """`hotwords` and `keywords[]` together, as faster-whisper's one hotwords string."""
        words = [word.strip() for word in (self.hotwords or "", *self.keywords) if word.strip()]
        return ", ".join(words) or None

    def vad(self) -> tuple[bool | None, dict[str, float] | None]:
        """(vad_filter, VAD parameters) from `chunking_strategy` and the `vad_filter` extension."""
        strategy = self.chunking()
        if strategy is None:
            return self.vad_filter, None
        if self.vad_filter is False:
            raise InvalidRequestError(
                "vad_filter=false contradicts chunking_strategy, which cuts the audio with the VAD; send one of them.",
                param="chunking_strategy",
            )
        return True, (None if strategy == "auto" else strategy.vad_options())

    def chunking(self) -> ChunkingStrategy | None:
        parts = {
            "type": self.chunking_type,
            "prefix_padding_ms": self.chunking_prefix_padding_ms,
            "silence_duration_ms": self.chunking_silence_duration_ms,
            "threshold": self.chunking_threshold,
        }
        given = {key: value for key, value in parts.items() if value is not None}
        if given and self.chunking_strategy is not None:
            raise InvalidRequestError(
                "chunking_strategy is given twice (as a value and as chunking_strategy[...] fields); send one.",
                param="chunking_strategy",
            )
        if given:
            return _server_vad(given)
        value = (self.chunking_strategy or "").strip()
        if not value:
            return None
        if value == "auto":
            return "auto"
        if value.startswith("{"):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                decoded = None
            if isinstance(decoded, dict):
                return _server_vad(decoded)
        raise InvalidRequestError(
            f"Invalid chunking_strategy '{value[:100]}': use 'auto' or a server_vad object "
            '({"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200}).',
            param="chunking_strategy",
        )


def _server_vad(fields: dict[str, object]) -> ServerVadChunking:
    try:
        return ServerVadChunking.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        param = f"chunking_strategy.{where}" if where else "chunking_strategy"
        raise InvalidRequestError(f"Invalid value for '{param}': {first['msg']}.", param=param) from None


class TranscriptionForm(_AudioForm):
    language: str | None = Field(default=None, description="The spoken language (`en`, `de`, ...); unset detects it.")
    languages: list[str] = Field(
        default_factory=list,
        alias="languages[]",
        description=(
            "Languages the audio may be in. With no `language`, one entry is used as the language, several "
            "restrict the detection to them."
        ),
    )
    timestamp_granularities: list[TimestampGranularity] = Field(
        default_factory=list,
        alias="timestamp_granularities[]",
        description="`segment` and/or `word`; word timestamps need `response_format=verbose_json`.",
    )
    timestamp_granularities_bare: list[TimestampGranularity] = Field(
        default_factory=list,
        alias="timestamp_granularities",
        description="The same as `timestamp_granularities[]`, for clients that send the bare name.",
    )

    def granularities(self) -> set[TimestampGranularity]:
        """The requested granularities (segment by default). Word timestamps only fit verbose_json."""
        requested = set(self.timestamp_granularities) | set(self.timestamp_granularities_bare)
        if "word" in requested and self.response_format != "verbose_json":
            raise InvalidRequestError(
                "Word timestamps need response_format=verbose_json; "
                f"response_format={self.response_format} cannot carry them.",
                param="timestamp_granularities",
            )
        return requested or {"segment"}

    def language_hints(self) -> tuple[str, ...]:
        """`languages[]` as Whisper's codes (400 naming `languages` for one that is none)."""
        hints: list[str] = []
        for language in self.languages:
            try:
                code = language_code(language)
            except InvalidRequestError as error:
                raise InvalidRequestError(error.message, param="languages", code=error.code) from None
            if code is not None:
                hints.append(code)
        return tuple(hints)


class TranslationForm(_AudioForm):
    language: str | None = Field(
        default=None, description="Extension: the spoken language (`de`, ...), if known; unset detects it."
    )
