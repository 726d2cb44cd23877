"""The application factory: `uvicorn --factory speaches.main:create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from speaches import __version__
from speaches.config import Settings
from speaches.errors import APP_ERROR_RESPONSES, ApiError, install_error_handlers
from speaches.inference import InferencePool
from speaches.live.router import router as live_router
from speaches.management.models_router import router as models_router
from speaches.management.registry import managed_model
from speaches.management.router import router as management_router
from speaches.metrics import router as metrics_router
from speaches.middleware import install_middleware
from speaches.models.manager import ModelManager
from speaches.request_id import install_request_id_logging
from speaches.speech.piper import piper_voice_kind
from speaches.speech.router import router as speech_router
from speaches.state import AppState
from speaches.transcription.router import router as transcription_router
from speaches.transcription.whisper import whisper_model_kind

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    install_request_id_logging()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models = ModelManager()
        models.register(whisper_model_kind(settings))
        models.register(piper_voice_kind(settings))
        pool = InferencePool(settings.inference_concurrency, settings.max_queued_requests)
        state = AppState(settings=settings, models=models, pool=pool)
        app.state.speaches = state
        preload = asyncio.create_task(_preload(state), name="preload models")
        try:
            yield
        finally:
            preload.cancel()
            await models.close()
            pool.shutdown()

    app = FastAPI(
        title="speaches",
        version=__version__,
        description="A self-hosted, OpenAI-API-compatible speech server.",
        lifespan=lifespan,
        responses=APP_ERROR_RESPONSES,
    )
    install_error_handlers(app)
    install_middleware(app, settings)
    app.include_router(transcription_router)
    app.include_router(speech_router)
    app.include_router(live_router)
    app.include_router(management_router)
    app.include_router(models_router)
    app.include_router(metrics_router)
    return app


async def _preload(state: AppState) -> None:
    for model_id in state.settings.preload_models:
        try:
            # The same key a request uses (aliases resolved), or the preloaded copy would go unused.
            model = managed_model(model_id, state.settings, param="PRELOAD_MODELS")
            await state.models.load(model.kind, model.model_id)
        except ApiError as error:
            logger.error("preloading %s failed: %s", model_id, error.message)
            state.preload_errors.append(f"{model_id}: {error.message}")
        except Exception as error:
            logger.exception("preloading %s failed", model_id)
            state.preload_errors.append(f"{model_id}: {error}")
    state.ready.set()
