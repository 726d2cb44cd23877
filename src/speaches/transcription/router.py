"""Speech to text: POST /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from speaches.errors import ApiError
from speaches.languages import language_code
from speaches.sse import sse_error, sse_event
from speaches.state import AppState
from speaches.transcription import formats
from speaches.transcription.batching import bind_cancel_token
from speaches.transcription.forms import TranscriptionForm, TranslationForm
from speaches.transcription.protocol import (
    Logprob,
    Task,
    TextDeltaEvent,
    TextDoneEvent,
    TimestampGranularity,
    TranscriptionJson,
    TranscriptionVerboseJson,
)
from speaches.transcription.whisper import DecodeOptions, Transcription
from speaches.web.dependencies import AfterResponse, State
from speaches.web.errors import error_responses
from speaches.web.streaming import event_stream

if TYPE_CHECKING:
    from speaches.transcription.whisper import Segment

logger = logging.getLogger(__name__)

router = APIRouter(tags=["transcription"])

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
    form.check_supported()
    granularities = form.granularities()
    options = _decode_options(
        form,
        task="transcribe",
        default_language=state.settings.default_language,
        word_timestamps="word" in granularities,
        language_hints=form.language_hints(),
    )
    return await _answer(state, cleanups, form, options, granularities)


@router.post("/v1/audio/translations", response_model=_JSON_BODIES, responses={**_RESPONSES, **_ERRORS})
async def create_translation(
    state: State, cleanups: AfterResponse, form: Annotated[TranslationForm, File()]
) -> Response:
    """Translate speech in any language into English text (OpenAI's `audio.translations.create`)."""
    form.check_supported()
    options = _decode_options(form, task="translate")
    return await _answer(state, cleanups, form, options, {"segment"})


def _decode_options(
    form: TranscriptionForm | TranslationForm,
    *,
    task: Task,
    default_language: str | None = None,
    word_timestamps: bool = False,
    language_hints: tuple[str, ...] = (),
) -> DecodeOptions:
    vad_filter, vad_parameters = form.vad()
    return DecodeOptions(
        task=task,
        language=language_code(form.language),
        default_language=default_language,
        prompt=form.prompt,
        temperature=form.temperature,
        word_timestamps=word_timestamps,
        hotwords=form.hotword_text(),
        vad_filter=vad_filter,
        vad_parameters=vad_parameters,
        language_hints=language_hints,
        token_logprobs="logprobs" in form.include,
        timed_segments=not form.stream and form.response_format in ("srt", "vtt", "verbose_json"),
    )


async def _answer(
    state: AppState,
    cleanups: contextlib.AsyncExitStack,
    form: TranscriptionForm | TranslationForm,
    options: DecodeOptions,
    granularities: set[TimestampGranularity],
) -> Response:
    ref = state.catalog.stt(form.model)
    # A client that leaves takes its model calls out of the batch queue (steps inherit this context).
    cleanups.callback(bind_cancel_token().cancel)
    transcription = Transcription(
        form.file.file,
        options,
        state.settings.whisper,
        model_id=ref.id,
        max_audio_seconds=state.settings.max_audio_seconds,
    )
    # Decoding and inference run in the pool, one segment per step; closing stops them.
    segments = await state.stream(ref, transcription.segments)
    cleanups.push_async_callback(segments.aclose)
    if form.stream:
        return await _stream(transcription, segments, state)
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
            logprobs = _logprobs_of(transcription, segments)
            answer = formats.to_json(segments, transcription.duration, logprobs=logprobs)
            return JSONResponse(answer.model_dump(mode="json", exclude_none=True))


def _logprobs_of(transcription: Transcription, segments: Iterable[Segment]) -> list[Logprob] | None:
    """The scored tokens of `segments` in order, when the request asked for them (else None)."""
    if not transcription.options.token_logprobs:
        return None
    return [logprob for segment in segments for logprob in transcription.take_logprobs(segment.id)]


async def _stream(transcription: Transcription, segments: AsyncIterator[Segment], state: AppState) -> Response:
    """Server-sent text deltas, one per decoded segment, then the full text with usage (and logprobs)."""
    # Wait for the first segment so that errors found early (audio that does not decode, a full
    # queue) still answer with their HTTP status rather than inside a 200 stream.
    first = await anext(segments, None)

    async def events() -> AsyncIterator[str]:
        joiner = formats.TextJoiner()
        all_logprobs: list[Logprob] | None = [] if transcription.options.token_logprobs else None
        try:
            async for segment in _prepend(first, segments):
                logprobs = _logprobs_of(transcription, [segment])
                if all_logprobs is not None and logprobs:
                    all_logprobs.extend(logprobs)
                if delta := joiner.add(segment.text):
                    yield sse_event(TextDeltaEvent(delta=delta, logprobs=logprobs))
            usage = formats.duration_usage(transcription.duration)
            yield sse_event(TextDoneEvent(text=joiner.text, logprobs=all_logprobs, usage=usage))
        except ApiError as error:
            yield sse_error(error)
        except Exception:
            logger.exception("streamed transcription failed")
            yield sse_error(ApiError("The transcription failed on the server; it has been logged.", status_code=500))

    return event_stream(events(), state.settings)


async def _prepend(first: Segment | None, rest: AsyncIterator[Segment]) -> AsyncIterator[Segment]:
    if first is None:
        return
    yield first
    async for segment in rest:
        yield segment
