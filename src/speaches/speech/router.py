"""Text to speech: POST /v1/audio/speech, GET /v1/audio/voices and GET /v1/audio/models."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter
from starlette.responses import Response, StreamingResponse

from speaches.audio.encoding import SPEECH_RESPONSE_FORMATS, content_type_for
from speaches.config import Settings
from speaches.errors import InvalidRequestError
from speaches.models.catalog import PIPER_REPO_ID, TTS_ALIASES
from speaches.speech.piper import SynthesisUsage, list_voices, synthesize_speech
from speaches.speech.protocol import (
    CreateSpeechRequest,
    SpeechAudioDeltaEvent,
    SpeechAudioDoneEvent,
    SpeechModelList,
    SpeechModelObject,
    SpeechUsage,
    VoiceList,
)
from speaches.sse import sse_event
from speaches.web.dependencies import AfterResponse, State
from speaches.web.errors import error_responses
from speaches.web.streaming import event_stream

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
async def create_speech(request: CreateSpeechRequest, state: State, cleanups: AfterResponse) -> Response:
    """Speak `input`, streaming the audio sentence by sentence as it is synthesized."""
    check_input(request.input, state.settings)
    ref = state.catalog.speech_voice(request.model, request.voice_name)
    usage = SynthesisUsage()
    chunks = await state.stream(
        ref,
        lambda voice: synthesize_speech(
            voice,
            request.input,
            response_format=request.response_format,
            speed=request.speed,
            sample_rate=request.sample_rate,
            usage=usage,
        ),
    )
    cleanups.push_async_callback(chunks.aclose)  # stops the synthesis at its next sentence if it still runs
    # Wait for the first audio before answering, so a full queue (429) or a failing synthesis
    # still gets a proper error response instead of a broken 200 stream.
    first = await anext(chunks, b"")
    if usage.sentences == 0:  # piper found no words in it: an empty file would not even decode
        raise InvalidRequestError("'input' has nothing to speak: it holds only punctuation or symbols.", param="input")
    if request.stream_format == "sse":
        return event_stream(sse_events(first, chunks, usage), state.settings)
    return StreamingResponse(audio_bytes(first, chunks), media_type=content_type_for(request.response_format))


@router.get("/v1/audio/voices")
async def get_voices(state: State) -> VoiceList:
    """The piper voices this server has, without loading any of them."""
    voices = await state.models.io.files(list_voices, state.catalog)
    return VoiceList(data=voices, voices=voices)


@router.get("/v1/audio/models")
async def get_speech_models() -> SpeechModelList:
    """The `model` values POST /v1/audio/speech accepts (as Open WebUI lists them for its TTS settings)."""
    piper = SpeechModelObject(id=PIPER_REPO_ID, name="Piper (every voice)", owned_by="rhasspy")
    aliases = [
        SpeechModelObject(id=alias, name=f"{alias} (piper)", owned_by="speaches", alias_of=PIPER_REPO_ID)
        for alias in sorted(TTS_ALIASES)
    ]
    models = [piper, *aliases]
    return SpeechModelList(data=models, models=models)


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
