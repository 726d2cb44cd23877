"""Speech to text: POST /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, File
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from speaches.errors import ApiError, error_responses
from speaches.sse import sse_error, sse_event
from speaches.state import AppState, State
from speaches.transcription import formats
from speaches.transcription.protocol import (
    TextDeltaEvent,
    TextDoneEvent,
    TimestampGranularity,
    TranscriptionForm,
    TranscriptionJson,
    TranscriptionVerboseJson,
    TranslationForm,
    language_code,
)
from speaches.transcription.whisper import STT_KIND, DecodeOptions, Transcription, stt_model_id

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment

logger = logging.getLogger(__name__)

router = APIRouter(tags=["transcription"])


async def _after_response() -> AsyncIterator[contextlib.AsyncExitStack]:
    """Cleanups (model lease, pool work) that run once the response is sent, or the request is abandoned.

    A streamed response whose client leaves before the stream starts never runs its generator, so
    its `finally` cannot be trusted to release what the request holds; this scope always ends.
    """
    async with contextlib.AsyncExitStack() as cleanups:
        yield cleanups


AfterResponse = Annotated[contextlib.AsyncExitStack, Depends(_after_response, scope="request")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The transcript in the requested `response_format`, or server-sent events when `stream=true`.",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/vtt": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
}

_ERRORS = error_responses(400, 404, 429)
# Documents the JSON bodies in the schema; the routes return ready-made responses, so nothing is re-validated.
_JSON_BODIES = TranscriptionJson | TranscriptionVerboseJson


@router.post("/v1/audio/transcriptions", response_model=_JSON_BODIES, responses={**_RESPONSES, **_ERRORS})
async def create_transcription(
    state: State, cleanups: AfterResponse, form: Annotated[TranscriptionForm, File()]
) -> Response:
    """Transcribe audio in its own language (OpenAI's `audio.transcriptions.create`)."""
    granularities = form.granularities()
    options = DecodeOptions(
        task="transcribe",
        language=language_code(form.language or state.settings.default_language),
        prompt=form.prompt,
        temperature=form.temperature,
        word_timestamps="word" in granularities,
        hotwords=form.hotwords,
        vad_filter=form.vad_filter,
        timed_segments=_shows_segment_timings(form),
    )
    return await _answer(state, cleanups, form, options, granularities)


@router.post("/v1/audio/translations", response_model=_JSON_BODIES, responses={**_RESPONSES, **_ERRORS})
async def create_translation(
    state: State, cleanups: AfterResponse, form: Annotated[TranslationForm, File()]
) -> Response:
    """Translate speech in any language into English text (OpenAI's `audio.translations.create`)."""
    options = DecodeOptions(
        task="translate",
        prompt=form.prompt,
        temperature=form.temperature,
        hotwords=form.hotwords,
        vad_filter=form.vad_filter,
        timed_segments=_shows_segment_timings(form),
    )
    return await _answer(state, cleanups, form, options, {"segment"})


def _shows_segment_timings(form: TranscriptionForm | TranslationForm) -> bool:
    return not form.stream and form.response_format in ("srt", "vtt", "verbose_json")


async def _answer(
    state: AppState,
    cleanups: contextlib.AsyncExitStack,
    form: TranscriptionForm | TranslationForm,
    options: DecodeOptions,
    granularities: set[TimestampGranularity],
) -> Response:
    model_id = stt_model_id(form.model, state.settings)
    lease = await state.models.acquire(STT_KIND, model_id)
    try:
        transcription = Transcription(lease.model, form.file.file, options, state.settings.whisper)
    except BaseException:
        lease.release()
        raise
    # Decoding and inference run in the pool, one segment per step; closing stops them. The lease
    # goes back only when no thread uses the model any more, so an unload never races a step.
    segments = state.pool.iterate(transcription.segments, on_finished=lease.release)
    cleanups.push_async_callback(segments.aclose)
    if form.stream:
        return await _stream(segments)
    collected = [segment async for segment in segments]
    return _render(form, transcription, collected, granularities)


def _render(
    form: TranscriptionForm | TranslationForm,
    transcription: Transcription,
    segments: list[Segment],
    granularities: set[TimestampGranularity],
) -> Response:
    match form.response_format:
        case "text":
            return PlainTextResponse(formats.to_text(segments))
        case "srt":
            return PlainTextResponse(formats.to_srt(segments))
        case "vtt":
            return Response(formats.to_vtt(segments), media_type="text/vtt; charset=utf-8")
        case "verbose_json":
            verbose = formats.to_verbose_json(
                segments,
                task=transcription.options.task,
                language=transcription.language or "en",
                duration=transcription.duration,
                granularities=granularities,
            )
            return JSONResponse(verbose.model_dump(mode="json", exclude_none=True))
        case _:
            return JSONResponse(formats.to_json(segments, transcription.duration).model_dump(mode="json"))


async def _stream(segments: AsyncIterator[Segment]) -> StreamingResponse:
    """Server-sent text deltas, one per decoded segment, then the full text."""
    # Wait for the first segment so that errors found early (audio that does not decode, a full
    # queue) still answer with their HTTP status rather than inside a 200 stream.
    first = await anext(segments, None)

    async def events() -> AsyncIterator[str]:
        joiner = formats.TextJoiner()
        try:
            if first is not None:
                if delta := joiner.add(first.text):
                    yield sse_event(TextDeltaEvent(delta=delta))
                async for segment in segments:
                    if delta := joiner.add(segment.text):
                        yield sse_event(TextDeltaEvent(delta=delta))
            yield sse_event(TextDoneEvent(text=joiner.text))
        except ApiError as error:
            yield sse_error(error)
        except Exception:
            logger.exception("streamed transcription failed")
            yield sse_error(ApiError("The transcription failed on the server; it has been logged.", status_code=500))

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
