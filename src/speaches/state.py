"""The server's shared services, and the one way to work on a model while holding its lease.

Every door (HTTP routes, the live and Realtime sockets, the Wyoming listener) reaches the same
:class:`AppState`: one catalog, one model manager, one inference pool. Work on a model goes through
:meth:`AppState.stream` (or :meth:`AppState.run` for a single call): the model is leased for as long
as a pool thread may touch it, and the blocking work runs in the pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from speaches.chat.backend import ChatBackend
from speaches.config import Settings
from speaches.inference import InferencePool, PoolIterator
from speaches.models.catalog import Catalog, ModelRef
from speaches.models.manager import ModelManager

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    models: ModelManager
    pool: InferencePool
    catalog: Catalog
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the models in PRELOAD_MODELS are loaded."""
    preload_errors: list[str] = field(default_factory=list)
    chat: ChatBackend = field(init=False)
    """The LLM client and conversation memory of voice conversations (chat completions, Realtime)."""

    def __post_init__(self) -> None:
        self.chat = ChatBackend(self.settings)

    async def stream(self, ref: ModelRef, work: Callable[[Any], Iterator[T]]) -> PoolIterator[T]:
        """Lease the model and drive the blocking iterator `work(model)` in the pool, one item per step.

        The caller must `aclose()` the result however it ends (an HTTP route hands it to the
        request's cleanups); closing never waits, stops the work at its next item, and gives the
        lease back only once no thread uses the model any more, so an unload never races a step.
        """
        lease = await self.models.acquire(ref)
        try:
            return self.pool.iterate(lambda: work(lease.model), on_finished=lease.release)
        except BaseException:
            lease.release()
            raise

    async def run(self, ref: ModelRef, work: Callable[[Any], T]) -> T:
        """Lease the model and run one blocking call `work(model)` in the pool.

        A caller cancelled mid-call returns at once; the lease outlives it until the thread is done.
        """

        def one_call(model: Any) -> Iterator[T]:
            yield work(model)

        results = await self.stream(ref, one_call)
        try:
            return await anext(results)
        finally:
            await results.aclose()
