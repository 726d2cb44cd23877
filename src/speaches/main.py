"""The application factory: `uvicorn --factory speaches.main:create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from starlette.types import Receive, Scope, Send

from speaches import __version__
from speaches.chat import router as chat
from speaches.config import Settings
from speaches.errors import ApiError
from speaches.inference import InferencePool
from speaches.live import router as live
from speaches.management import health_router, metrics_router, models_router, ps_router, registry_router
from speaches.models.catalog import Catalog
from speaches.models.io import ModelIO
from speaches.models.manager import ModelManager
from speaches.models.sources import bound_hub_timeouts
from speaches.realtime import router as realtime
from speaches.request_id import install_request_id_logging
from speaches.speech import router as speech
from speaches.speech.piper import piper_voice_kind
from speaches.state import AppState
from speaches.transcription import router as transcription
from speaches.transcription.whisper import whisper_model_kind
from speaches.ui import router as ui
from speaches.web.errors import APP_ERROR_RESPONSES, install_error_handlers
from speaches.web.limits import ABORT_CONNECTION, connection_abort
from speaches.web.log_redaction import install_secret_redaction
from speaches.web.middleware import install_middleware
from speaches.wyoming.server import WyomingServer

logger = logging.getLogger(__name__)

ROUTERS: tuple[APIRouter, ...] = (
    transcription.router,
    speech.router,
    live.router,
    realtime.router,
    chat.router,
    models_router.router,
    ps_router.router,
    registry_router.router,
    health_router.router,
    metrics_router.router,
)
"""Every door of the HTTP app, one router per capability or resource, all included the same way."""


class SpeachesApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only here is `send` still the server's own, which knows the connection; the send timeout
        # uses it to drop a client that stopped reading (see speaches.web.limits).
        if scope["type"] == "http":
            scope[ABORT_CONNECTION] = connection_abort(send)
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    install_request_id_logging()
    install_secret_redaction(settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bound_hub_timeouts()
        models = ModelManager(ModelIO(settings.max_concurrent_model_loads, settings.max_queued_requests))
        models.register(whisper_model_kind(settings))
        models.register(piper_voice_kind(settings))
        pool = InferencePool(settings.inference_concurrency, settings.max_queued_requests)
        state = AppState(settings=settings, models=models, pool=pool, catalog=Catalog(settings))
        app.state.speaches = state
        wyoming = await _start_wyoming(state)
        preload = asyncio.create_task(_preload(state), name="preload models")
        try:
            yield
        finally:
            if wyoming is not None:
                await wyoming.close()
            preload.cancel()
            await state.chat.aclose()
            await models.close()
            pool.shutdown()

    app = SpeachesApp(
        title="speaches",
        version=__version__,
        description="A self-hosted, OpenAI-API-compatible speech server.",
        lifespan=lifespan,
        responses=APP_ERROR_RESPONSES,
    )
    install_error_handlers(app)
    install_middleware(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    if settings.enable_ui:
        app.include_router(ui.router)
    return app


async def _start_wyoming(state: AppState) -> WyomingServer | None:
    if state.settings.wyoming_uri is None:
        return None
    server = WyomingServer(state)
    await server.start(state.settings.wyoming_uri)
    return server


async def _preload(state: AppState) -> None:
    for model_id in state.settings.preload_models:
        try:
            # The same reference a request resolves to (aliases included), or the preloaded copy would go unused.
            await state.models.load(state.catalog.any(model_id, param="PRELOAD_MODELS"))
        except ApiError as error:
            logger.error("preloading %s failed: %s", model_id, error.message)
            state.preload_errors.append(f"{model_id}: {error.message}")
        except Exception as error:
            logger.exception("preloading %s failed", model_id)
            state.preload_errors.append(f"{model_id}: {error}")
    state.ready.set()
