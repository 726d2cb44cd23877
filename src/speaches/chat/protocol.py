"""OpenAI's chat completion shapes, as far as this server reads or writes them.

The request is kept open (`extra="allow"`): every field this server does not act on (temperature,
tools, response_format, ...) goes to the LLM exactly as the client sent it. Messages stay plain
dicts for the same reason; only their `input_audio` parts and assistant `audio` references are
rewritten (see `speaches.chat.messages`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ChatAudioFormat = Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]
"""What `audio.format` may be; `pcm16` is raw 16-bit little-endian mono at 24 kHz, as OpenAI sends it."""


class VoiceId(BaseModel):
    id: str


class AudioOutputOptions(BaseModel):
    """`audio` of a request that asks for spoken answers (`modalities` includes `audio`)."""

    voice: str | VoiceId = Field(description="An OpenAI voice name (alloy, ...) or a piper voice (en_US-joe-medium).")
    format: ChatAudioFormat = Field(description="`pcm16` is the only format a streamed answer can use, as at OpenAI.")

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


class ChatMessage(BaseModel):
    """One message; every field but `role` passes as sent (`content` may be a string or a list of parts)."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(description="`system`, `developer`, `user`, `assistant` or `tool`.")


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`: OpenAI's request; fields not listed pass to the LLM unchanged."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The LLM's model name, passed to CHAT_COMPLETION_BASE_URL as given.")
    messages: list[ChatMessage] = Field(
        min_length=1,
        description=(
            "OpenAI's messages. `input_audio` parts (base64 wav or mp3) are transcribed and sent as text; an "
            "assistant message whose `audio.id` names an earlier spoken answer is sent with that answer's words."
        ),
    )
    stream: bool | None = Field(default=False, strict=True)
    modalities: list[Literal["text", "audio"]] | None = Field(
        default=None, description='`["text", "audio"]` asks for a spoken answer as well: set `audio` too.'
    )
    audio: AudioOutputOptions | None = None


class ChatCompletionAudio(BaseModel):
    """`message.audio` of a spoken answer."""

    id: str
    data: str
    """Base64 audio in the requested format."""
    expires_at: int
    """Until then (Unix seconds) a later request may refer to this answer by `id`."""
    transcript: str


class ChatCompletionAudioDelta(BaseModel):
    """`delta.audio` of a streamed spoken answer: one per piece of speech, then one with `expires_at` only."""

    id: str
    data: str | None = None
    transcript: str | None = None
    expires_at: int | None = None
