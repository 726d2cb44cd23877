"""The bounded pool every inference job runs in: transcription, translation, synthesis, live steps.

At most `INFERENCE_CONCURRENCY` jobs run at once, each in a worker thread, so the event loop never
blocks. Up to `MAX_QUEUED_REQUESTS` more may wait; past that a new job is refused with 429 and a
`Retry-After` header instead of piling up memory. A job whose caller goes away keeps its slot until
its thread really finishes (a thread cannot be interrupted), so the limit always holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from speaches.errors import ApiError

P = ParamSpec("P")
T = TypeVar("T")


class PoolBusyError(ApiError):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "The server is busy: too many requests are waiting for inference. Retry shortly.",
            status_code=429,
            code="server_busy",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class InferencePool:
    def __init__(self, concurrency: int, max_queued: int) -> None:
        self.concurrency = concurrency
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="inference")
        self._free = asyncio.Semaphore(concurrency)
        self.waiting = 0
        """Jobs admitted but waiting for a slot (the queue depth)."""
        self.running = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Hold one slot for a multi-step job (e.g. a streamed transcription), queueing if needed."""
        if self._free.locked() and self.waiting >= self.max_queued:
            raise PoolBusyError(retry_after_seconds=1 + self.waiting // max(self.concurrency, 1))
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        slot = Slot(self)
        try:
            yield slot
        finally:
            slot.closed = True
            if slot.in_thread is None:
                self._release()
            else:
                # The caller left while a step still runs: free the slot only when the thread is done.
                slot.in_thread.add_done_callback(lambda _future: self._release())

    def _release(self) -> None:
        self.running -= 1
        self._free.release()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one blocking call in the pool."""
        async with self.slot() as slot:
            return await slot.run(fn, *args, **kwargs)

    async def iterate(self, make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        """Drive a blocking iterator in the pool, one item per step, holding one slot throughout.

        When the consumer stops early (a client disconnected), the iterator is closed in the pool,
        which ends a lazy generator such as faster-whisper's segments at its next item.
        """
        async with self.slot() as slot:
            iterator = await slot.run(make_iterator)
            try:
                while True:
                    item = await slot.run(next, iterator, _END)
                    if item is _END:
                        return
                    yield item  # type: ignore[misc]
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    slot.run_after_current_step(close)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_END = object()


class Slot:
    """A held pool slot; runs blocking steps in its worker thread one at a time."""

    def __init__(self, pool: InferencePool) -> None:
        self._pool = pool
        self.in_thread: asyncio.Future[object] | None = None
        self.closed = False

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        future = self.run_detached(functools.partial(fn, *args, **kwargs))
        return await asyncio.shield(future)

    def run_detached(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        # Run in a copy of the caller's context, so log lines from the worker carry its request id.
        future = loop.run_in_executor(self._pool._executor, contextvars.copy_context().run, fn)
        self.in_thread = future  # type: ignore[assignment]
        future.add_done_callback(self._step_done)
        return future

    def run_after_current_step(self, fn: Callable[[], object]) -> None:
        """Run `fn` in the pool once the step in flight (if any) is done, without waiting for it.

        A generator must not be closed while another thread is inside its next(); chaining keeps
        the two apart even when the caller was cancelled mid-step.
        """
        pending = self.in_thread
        if pending is None:
            self.run_detached(fn)
        else:
            pending.add_done_callback(lambda _future: self.run_detached(fn))

    def _step_done(self, future: asyncio.Future[object]) -> None:
        if self.in_thread is future:
            self.in_thread = None
        if not future.cancelled():
            future.exception()  # retrieved here so an abandoned step does not log a warning
