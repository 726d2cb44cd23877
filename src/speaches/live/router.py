"""WS /v1/audio/transcriptions: live transcription of a PCM stream.

The same path answers POST over HTTP (transcription/router.py); Starlette matches a route by the
scope's type, so the two never meet. The messages are described in `speaches.live.protocol`. With API_KEY
set, `ApiKeyMiddleware` has already refused a handshake without the key (HTTP 401) before this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from fastapi import APIRouter, WebSocket
from starlette.datastructures import QueryParams

from speaches.config import Settings
from speaches.errors import ApiError, InvalidRequestError, shorten
from speaches.languages import language_for_model
from speaches.live import protocol
from speaches.live.connection import LiveConnection
from speaches.live.protocol import LiveResponseFormat
from speaches.live.session import LiveTask, LiveTranscriber
from speaches.models.catalog import Catalog, ModelRef
from speaches.web.dependencies import State

router = APIRouter()


@router.websocket("/v1/audio/transcriptions")
async def live_transcription(websocket: WebSocket, state: State) -> None:
    """Stream 16 kHz mono int16 PCM in; get the transcript (or, with `task=translate`, its English translation)
    back as it becomes certain."""
    # Accepted first so that every refusal can explain itself in an error message before the close.
    await websocket.accept()
    connection = LiveConnection(websocket, state.settings)
    try:
        request = LiveRequest.from_query(websocket.query_params, state.catalog)
        lease = await state.models.acquire(request.model)
    except ApiError as error:
        await connection.refuse(error)
        return
    try:
        language = request.language_for(lease.model.supported_languages, state.settings)
    except ApiError as error:
        lease.release()
        await connection.refuse(error)
        return
    transcriber = LiveTranscriber(
        lease.model,
        state.pool,
        task=request.task,
        language=language,
        min_chunk_seconds=state.settings.live_min_chunk_seconds,
    )
    try:
        await connection.serve(transcriber, request.response_format)
    finally:
        # A step abandoned by a client that left still runs in its thread; the model stays leased until it ends.
        transcriber.after_current_step(lease.release)


@dataclass(frozen=True)
class LiveRequest:
    """The query parameters of a session, checked."""

    model: ModelRef
    language: str | None
    response_format: LiveResponseFormat
    task: LiveTask

    @classmethod
    def from_query(cls, params: QueryParams, catalog: Catalog) -> LiveRequest:
        response_format = params.get("response_format") or "json"
        if response_format not in protocol.RESPONSE_FORMATS:
            raise InvalidRequestError(
                f"Unsupported response_format '{response_format}' for live transcription; "
                f"use one of: {', '.join(protocol.RESPONSE_FORMATS)}.",
                param="response_format",
                code="invalid_value",
            )
        task = params.get("task") or "transcribe"
        if task not in get_args(LiveTask):
            raise InvalidRequestError(
                f"Unsupported task '{shorten(task)}'; use 'transcribe' or 'translate' (into English).",
                param="task",
                code="invalid_value",
            )
        language = (params.get("language") or "").strip().lower() or None
        model = catalog.stt(params.get("model"))
        return cls(model=model, language=language, response_format=response_format, task=task)  # type: ignore[arg-type]

    def language_for(self, supported: list[str], settings: Settings) -> str | None:
        """The language to transcribe in: the requested one if the model knows it, else DEFAULT_LANGUAGE."""
        return language_for_model(self.language, supported, model_id=self.model.id, default=settings.default_language)
