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
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, ParamSpec, TypeVar

from speaches.errors import ApiError

logger = logging.getLogger(__name__)

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

    async def acquire_slot(self) -> Slot:
        """Take one slot, queueing if needed; 429 when the queue is full. Give it back with `slot.finish()`."""
        if self._free.locked() and self.waiting >= self.max_queued:
            raise PoolBusyError(retry_after_seconds=1 + self.waiting // max(self.concurrency, 1))
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return Slot(self)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Hold one slot for a multi-step job, queueing if needed."""
        slot = await self.acquire_slot()
        try:
            yield slot
        finally:
            slot.finish()

    def _release(self) -> None:
        self.running -= 1
        self._free.release()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one blocking call in the pool."""
        async with self.slot() as slot:
            return await slot.run(fn, *args, **kwargs)

    def iterate(
        self, make_iterator: Callable[[], Iterator[T]], *, on_finished: Callable[[], None] | None = None
    ) -> PoolIterator[T]:
        """Drive a blocking iterator in the pool, one item per step, holding one slot throughout.

        When the consumer stops early (a client disconnected), the iterator is closed in the pool,
        which ends a lazy generator such as faster-whisper's segments at its next item.
        `on_finished` runs once no thread touches the iterator any more: release the model the
        iterator uses there, never earlier, or a model could be unloaded under a running step.
        """
        return PoolIterator(self, make_iterator, on_finished)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PoolIterator(Generic[T]):
    """The async face of a blocking iterator running in the pool; see `InferencePool.iterate`.

    A class rather than an async generator so that `aclose()` always finishes the job, even when
    iteration never started (an async generator that never ran skips its `finally`), and so that
    finishing never awaits: it must work inside an already-cancelled task.
    """

    def __init__(
        self, pool: InferencePool, make_iterator: Callable[[], Iterator[T]], on_finished: Callable[[], None] | None
    ) -> None:
        self._pool = pool
        self._make_iterator = make_iterator
        self._on_finished = on_finished
        self._slot: Slot | None = None
        self._iterator: Iterator[T] | None = None
        self._finished = False

    def __aiter__(self) -> PoolIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        try:
            if self._slot is None:
                self._slot = await self._pool.acquire_slot()
                self._iterator = await self._slot.run(self._make_iterator)
            item = await self._slot.run(next, self._iterator, _END)
        except BaseException:
            self._finish()
            raise
        if item is _END:
            self._finish()
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._slot is None:
            _call_safely(self._on_finished)
            return
        close = getattr(self._iterator, "close", None)
        self._slot.finish(close, then=self._on_finished)


_END = object()


def _call_safely(callback: Callable[[], object] | None) -> None:
    if callback is None:
        return
    try:
        callback()
    except Exception:
        logger.exception("pool job cleanup failed")


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

    def finish(self, close: Callable[[], object] | None = None, then: Callable[[], object] | None = None) -> None:
        """Give the slot back once the step in flight (if any) is done, never waiting for it.

        `close` runs in the pool after that step (a generator must not be closed while another
        thread is inside its next()); `then` runs on the loop after everything, with the slot free.
        """
        if self.closed:
            return
        self.closed = True

        def release() -> None:
            self._pool._release()
            _call_safely(then)

        def after_step(_future: object = None) -> None:
            if close is None:
                release()
                return
            try:
                closing = self.run_detached(close)
            except RuntimeError:  # the pool is shut down: nothing runs any more
                release()
                return
            closing.add_done_callback(lambda _closed: release())

        pending = self.in_thread
        if pending is None:
            after_step()
        else:
            pending.add_done_callback(after_step)

    def _step_done(self, future: asyncio.Future[object]) -> None:
        if self.in_thread is future:
            self.in_thread = None
        if not future.cancelled():
            future.exception()  # retrieved here so an abandoned step does not log a warning
