"""Text to speech: POST /v1/audio/speech and GET /v1/audio/voices."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from speaches.audio import SPEECH_RESPONSE_FORMATS, content_type_for
from speaches.config import OPENAI_VOICE_NAMES, Settings
from speaches.errors import InvalidRequestError, ModelNotFoundError, error_responses
from speaches.models.sources import PIPER_REPO_ID, TTS_ALIASES, model_kind_of
from speaches.speech.piper import TTS_KIND, SynthesisUsage, list_voices, synthesize_speech
from speaches.speech.protocol import (
    CreateSpeechRequest,
    SpeechAudioDeltaEvent,
    SpeechAudioDoneEvent,
    SpeechUsage,
    VoiceList,
)
from speaches.sse import sse_event
from speaches.state import State

router = APIRouter(tags=["speech"])


@router.post(
    "/v1/audio/speech",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The audio file in `response_format`, or server-sent events with `stream_format=sse`.",
            "content": {
                **{content_type_for(fmt): {} for fmt in SPEECH_RESPONSE_FORMATS},
                "text/event-stream": {},
            },
        },
        **error_responses(400, 404, 429),
    },
)
async def create_speech(request: CreateSpeechRequest, state: State) -> StreamingResponse:
    """Speak `input`, streaming the audio sentence by sentence as it is synthesized."""
    settings = state.settings
    check_input(request.input, settings)
    voice_id = resolve_voice(request, settings)
    lease = await state.models.acquire(TTS_KIND, voice_id)
    usage = SynthesisUsage()
    chunks = state.pool.iterate(
        lambda: synthesize_speech(
            lease.model,
            request.input,
            response_format=request.response_format,
            speed=request.speed,
            sample_rate=request.sample_rate,
            usage=usage,
        ),
        # The voice goes back only once no thread synthesizes with it any more.
        on_finished=lease.release,
    )

    async def finish() -> None:
        await chunks.aclose()  # stops the synthesis at its next sentence if it is still running

    try:
        # Wait for the first audio before answering, so a full queue (429) or a failing synthesis
        # still gets a proper error response instead of a broken 200 stream.
        first = await anext(chunks, b"")
    except BaseException:
        await finish()
        raise
    if usage.sentences == 0:  # piper found no words in it: an empty file would not even decode
        await finish()
        raise InvalidRequestError("'input' has nothing to speak: it holds only punctuation or symbols.", param="input")
    if request.stream_format == "sse":
        return ClosingStreamingResponse(
            sse_events(first, chunks, usage),
            finish=finish,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return ClosingStreamingResponse(
        audio_bytes(first, chunks), finish=finish, media_type=content_type_for(request.response_format)
    )


@router.get("/v1/audio/voices")
async def get_voices(state: State) -> VoiceList:
    """The piper voices this server has, without loading any of them."""
    voices = await asyncio.to_thread(list_voices, state.settings)
    return VoiceList(data=voices)


def check_input(text: str, settings: Settings) -> None:
    if not text.strip():
        raise InvalidRequestError("'input' is empty: give the text to speak.", param="input")
    if len(text) > settings.tts_max_input_chars:
        raise InvalidRequestError(
            f"'input' is {len(text)} characters long; the limit is {settings.tts_max_input_chars} "
            "(TTS_MAX_INPUT_CHARS). Split the text into several requests.",
            param="input",
            code="string_above_max_length",
        )


def resolve_voice(request: CreateSpeechRequest, settings: Settings) -> str:
    """The piper voice to speak with.

    `model` is normally `rhasspy/piper-voices` or an alias, and `voice` picks the voice. As
    /v1/models also lists each voice, `model` may name a voice itself; then `voice` may only
    repeat it or be an OpenAI voice name, which the explicit model overrides.
    """
    voice = request.voice_name
    if request.model in TTS_ALIASES or request.model == PIPER_REPO_ID:
        return settings.voice_for(voice or settings.tts_default_voice)
    if model_kind_of(request.model, settings) != "tts":
        aliases = ", ".join(f"'{alias}'" for alias in sorted(TTS_ALIASES))
        raise ModelNotFoundError(
            request.model,
            hint=f"Text to speech uses '{PIPER_REPO_ID}' (or {aliases}); choose the voice with 'voice'.",
        )
    if voice and voice != request.model and voice.lower() not in OPENAI_VOICE_NAMES:
        raise InvalidRequestError(
            f"'model' names the voice '{request.model}' but 'voice' names '{voice}'. Set 'model' to "
            f"'{PIPER_REPO_ID}' and choose the voice with 'voice'.",
            param="voice",
        )
    return request.model


async def audio_bytes(first: bytes, rest: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def sse_events(first: bytes, rest: AsyncIterator[bytes], usage: SynthesisUsage) -> AsyncGenerator[bytes, None]:
    async for chunk in audio_bytes(first, rest):
        yield sse_event(SpeechAudioDeltaEvent(audio=base64.b64encode(chunk).decode("ascii"))).encode()
    done = SpeechUsage(
        input_tokens=usage.phoneme_ids, output_tokens=usage.frames, total_tokens=usage.phoneme_ids + usage.frames
    )
    yield sse_event(SpeechAudioDoneEvent(usage=done)).encode()


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that runs `finish` however it ends: completed, failed or disconnected.

    Starlette neither closes the body iterator nor runs background tasks when a client disconnects
    mid-stream; the synthesis must still stop and the voice's lease must still be released.
    """

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        *,
        finish: Callable[[], Awaitable[None]],
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._content = content
        self._finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._content.aclose()
            finally:
                await self._finish()
