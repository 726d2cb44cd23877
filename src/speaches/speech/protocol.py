"""The OpenAI wire shapes of POST /v1/audio/speech, and of GET /v1/audio/voices.

The request mirrors the SDK's `SpeechCreateParams` (JSON body). Every field OpenAI defines is
accepted; `instructions` (how to speak) is one piper voices cannot follow, so it is accepted and
ignored, as documented. `sample_rate` is our extension. A field nobody defines is refused with a 400
naming it, as OpenAI refuses it, so a misspelt option never goes unseen.

With `stream_format="sse"` the response is a stream of `SpeechAudioDeltaEvent`s followed by one
`SpeechAudioDoneEvent`, as in OpenAI's API reference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from speaches.audio.encoding import SpeechResponseFormat
from speaches.models.catalog import PIPER_REPO_ID

StreamFormat = Literal["audio", "sse"]

MIN_SPEED = 0.25
MAX_SPEED = 4.0
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000


class VoiceReference(BaseModel):
    """OpenAI's `{"id": "voice_1234"}` form of `voice`: here the id is a piper voice name."""

    model_config = ConfigDict(extra="forbid")

    id: str


class CreateSpeechRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default=PIPER_REPO_ID,
        description=f"`{PIPER_REPO_ID}`, or one of its aliases `piper`, `tts-1`, `tts-1-hd`.",
    )
    input: str = Field(description="The text to speak.")
    voice: str | VoiceReference | None = Field(
        default=None,
        description=(
            "A piper voice such as `en_US-joe-medium` (GET /v1/audio/voices lists them), or one of OpenAI's "
            "voice names (`alloy`, `echo`, ...), which stand for the server's default voice. "
            "Omitted: the default voice."
        ),
    )
    instructions: str | None = Field(
        default=None,
        description=(
            "How to speak (tone, accent, pace). Accepted so OpenAI clients work unchanged, but ignored: a piper "
            "voice speaks one way. Use `speed` for the pace."
        ),
    )
    response_format: SpeechResponseFormat = Field(
        default="mp3",
        description=(
            "The audio format. mp3, opus, aac and pcm stream as they are synthesized; wav and flac carry their "
            "exact length in their header and come whole once synthesis ends."
        ),
    )
    speed: float = Field(
        default=1.0,
        ge=MIN_SPEED,
        le=MAX_SPEED,
        description="Playback speed: 2.0 takes half as long as 1.0. Pitch is kept.",
    )
    stream_format: StreamFormat = Field(
        default="audio",
        description="`audio`: the audio bytes as they are encoded. `sse`: base64 audio in server-sent events.",
    )
    stream: bool | None = Field(
        default=None,
        description="Accepted for clients written for servers that need it, and ignored: the audio always streams.",
    )
    sample_rate: int | None = Field(
        default=None,
        ge=MIN_SAMPLE_RATE,
        le=MAX_SAMPLE_RATE,
        description=(
            "Extension: resample the output to this rate (Hz). Default: 24000 for `pcm`, the voice's own rate "
            "otherwise. Codecs with fixed rates take the nearest valid one at or above it (opus: 24000 for 22050)."
        ),
    )

    @property
    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceReference) else self.voice

    @field_validator("model", "input", "voice")
    @classmethod
    def _no_lone_surrogates(cls, value: object) -> object:
        # JSON may escape half a UTF-16 pair ("\ud800"); no phonemizer, file name or encoder takes it.
        text = value.id if isinstance(value, VoiceReference) else value
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("it holds an unpaired UTF-16 surrogate (such as \\ud800), which is not text") from None
        return value


class SpeechUsage(BaseModel):
    """Token counts in piper's own units: phoneme ids in, spectrogram frames out."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


class SpeechAudioDeltaEvent(BaseModel):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str
    """The next bytes of the audio file, base64."""


class SpeechAudioDoneEvent(BaseModel):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage


class VoiceObject(BaseModel):
    """One voice this server can speak with, as GET /v1/audio/voices lists it."""

    id: str
    """The name to pass as `voice`, e.g. `en_US-joe-medium`."""
    object: Literal["voice"] = "voice"
    model: str = PIPER_REPO_ID
    name: str
    """The speaker or data set the voice was trained on (`joe`)."""
    language: str
    """Language and region, e.g. `en_US`."""
    language_name: str | None
    quality: str
    """piper's quality tier: `x_low`, `low`, `medium` or `high`."""
    sample_rate: int
    """The voice's own sample rate in Hz."""
    num_speakers: int
    source: str
    """Where the files are: `local` (MODELS_DIR), `cache` (Hugging Face cache) or `bundled`."""
    aliases: list[str]
    """OpenAI voice names that stand for this voice on this server."""


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceObject]
    voices: list[VoiceObject]
    """The same list under the key Open WebUI reads (`{"voices": [{"id", "name"}, ...]}`)."""


class SpeechModelObject(BaseModel):
    """A `model` that POST /v1/audio/speech accepts, as GET /v1/audio/models lists it."""

    id: str
    object: Literal["model"] = "model"
    name: str
    owned_by: str
    alias_of: str | None = None
    """For `tts-1`, `tts-1-hd` and `piper`: the model they stand for."""


class SpeechModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SpeechModelObject]
    models: list[SpeechModelObject]
    """The same list under the key Open WebUI reads (`{"models": [{"id": ...}, ...]}`)."""
