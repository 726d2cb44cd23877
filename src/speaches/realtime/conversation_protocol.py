"""The client events of Realtime conversation sessions (GA shapes), parsed as strictly as the transcription
session's (speaches.realtime.protocol): an unknown field is an error naming its path.

Audio input settings are the transcription session's own (`AudioInput`); what a conversation adds is its
voice (`audio.output`), its instructions and tools, its items and its responses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from speaches.realtime.protocol import (
    AudioFormat,
    AudioInput,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    _ClientModel,
)

Modality = Literal["text", "audio"]


class VoiceId(_ClientModel):
    id: str


class AudioOutput(_ClientModel):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None
    speed: Annotated[float, Field(ge=0.25, le=1.5)] | None = None


class ConversationAudio(_ClientModel):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class FunctionTool(_ClientModel):
    type: Literal["function"] = "function"
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolChoiceFunction(_ClientModel):
    type: Literal["function"]
    name: str


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction
MaxOutputTokens = Annotated[int, Field(ge=1, le=1_000_000)] | Literal["inf"]


class ConversationSessionUpdate(_ClientModel):
    """`session` of a `session.update` with `type: "realtime"` (OpenAI's RealtimeSessionCreateRequest)."""

    type: Literal["realtime"]
    model: str | None = None
    instructions: str | None = None
    output_modalities: Annotated[list[Modality], Field(min_length=1, max_length=2)] | None = None
    audio: ConversationAudio | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    max_output_tokens: MaxOutputTokens | None = None
    parallel_tool_calls: bool | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    # Accepted as OpenAI's clients send them; nothing here acts on them.
    tracing: Any = None
    truncation: Any = None
    prompt: Any = None
    reasoning: Any = None


class ConversationSessionUpdateEvent(_ClientModel):
    type: Literal["session.update"]
    event_id: str | None = None
    session: ConversationSessionUpdate


# --- items ---


class ContentPart(_ClientModel):
    type: Literal["input_text", "input_audio", "input_image", "output_text", "output_audio", "text", "audio"]
    text: str | None = None
    audio: str | None = None
    """Base64 audio in the session's input format (an `input_audio` part)."""
    transcript: str | None = None
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


_Status = Literal["completed", "incomplete", "in_progress"] | None


class MessageItem(_ClientModel):
    type: Literal["message"]
    id: str | None = None
    object: Literal["realtime.item"] | None = None
    status: _Status = None
    role: Literal["system", "user", "assistant"]
    content: list[ContentPart]


class FunctionCallItem(_ClientModel):
    type: Literal["function_call"]
    id: str | None = None
    object: Literal["realtime.item"] | None = None
    status: _Status = None
    call_id: str | None = None
    name: str
    arguments: str


class FunctionCallOutputItem(_ClientModel):
    type: Literal["function_call_output"]
    id: str | None = None
    object: Literal["realtime.item"] | None = None
    status: _Status = None
    call_id: str
    output: str


Item = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]


class ConversationItemCreate(_ClientModel):
    type: Literal["conversation.item.create"]
    event_id: str | None = None
    previous_item_id: str | None = None
    item: Item


class ConversationItemRetrieve(_ClientModel):
    type: Literal["conversation.item.retrieve"]
    event_id: str | None = None
    item_id: str


class ConversationItemDelete(_ClientModel):
    type: Literal["conversation.item.delete"]
    event_id: str | None = None
    item_id: str


class ConversationItemTruncate(_ClientModel):
    type: Literal["conversation.item.truncate"]
    event_id: str | None = None
    item_id: str
    content_index: Annotated[int, Field(ge=0)]
    audio_end_ms: Annotated[int, Field(ge=0)]


# --- responses ---


class ResponseAudioOutput(_ClientModel):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None


class ResponseAudio(_ClientModel):
    output: ResponseAudioOutput | None = None


class ResponseParameters(_ClientModel):
    conversation: Literal["auto", "none"] | None = None
    input: list[Item] | None = None
    instructions: str | None = None
    output_modalities: Annotated[list[Modality], Field(min_length=1, max_length=2)] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    max_output_tokens: MaxOutputTokens | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    audio: ResponseAudio | None = None
    prompt: Any = None
    reasoning: Any = None


class ResponseCreate(_ClientModel):
    type: Literal["response.create"]
    event_id: str | None = None
    response: ResponseParameters | None = None


class ResponseCancel(_ClientModel):
    type: Literal["response.cancel"]
    event_id: str | None = None
    response_id: str | None = None


class OutputAudioBufferClear(_ClientModel):
    type: Literal["output_audio_buffer.clear"]
    event_id: str | None = None


CONVERSATION_CLIENT_EVENTS: dict[str, type[_ClientModel]] = {
    "session.update": ConversationSessionUpdateEvent,
    "input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": InputAudioBufferCommit,
    "input_audio_buffer.clear": InputAudioBufferClear,
    "conversation.item.create": ConversationItemCreate,
    "conversation.item.retrieve": ConversationItemRetrieve,
    "conversation.item.delete": ConversationItemDelete,
    "conversation.item.truncate": ConversationItemTruncate,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
    "output_audio_buffer.clear": OutputAudioBufferClear,
}
AUDIO_BUFFER_EVENTS = frozenset({"input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear"})
"""Handled by the session's ears: the transcription session's own handling of the input buffer."""
