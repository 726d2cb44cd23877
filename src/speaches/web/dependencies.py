"""What routes take as FastAPI dependencies: the app's services, and the request's cleanups."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from speaches.state import AppState


def get_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.speaches
    return state


State = Annotated[AppState, Depends(get_state)]


async def _after_response() -> AsyncIterator[contextlib.AsyncExitStack]:
    """Cleanups (pool work, model leases) that run once the response is sent, or the request is abandoned.

    A streamed response whose client leaves before the stream starts never runs its generator, and
    Starlette does not close a body iterator whose client left mid-stream; this scope always ends.
    """
    async with contextlib.AsyncExitStack() as cleanups:
        yield cleanups


AfterResponse = Annotated[contextlib.AsyncExitStack, Depends(_after_response, scope="request")]
"""Register what a response holds here: ``cleanups.push_async_callback(stream.aclose)``."""
