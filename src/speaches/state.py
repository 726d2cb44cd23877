"""The server's shared services, reachable from any route or WebSocket as a FastAPI dependency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from speaches.config import Settings
from speaches.inference import InferencePool
from speaches.models.manager import ModelManager


@dataclass
class AppState:
    settings: Settings
    models: ModelManager
    pool: InferencePool
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the models in PRELOAD_MODELS are loaded."""
    preload_errors: list[str] = field(default_factory=list)


def get_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.speaches
    return state


State = Annotated[AppState, Depends(get_state)]
