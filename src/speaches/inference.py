"""The bounded pool every inference job runs in: transcription, translation, synthesis, live steps.

At most `INFERENCE_CONCURRENCY` steps run at once, each in a worker thread, so the event loop never
blocks. Up to `MAX_QUEUED_REQUESTS` new jobs may wait; past that a new job is refused with 429 and a
`Retry-After` header instead of piling up memory.

A slot is held only while a thread computes. A streamed job (:meth:`InferencePool.iterate`) takes a
slot for each step and gives it back between steps, so a client that reads its answer slowly, or
not at all, holds no inference capacity while the server waits for it. Steps queue first come,
first served, so a short request waits for the steps ahead of it, never for a long job to end; a
job that has started is never refused later (only new jobs count against the bound). A step whose
caller goes away keeps its slot until its thread really finishes (a thread cannot be interrupted),
so the limit always holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterator
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
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class InferencePool:
    def __init__(self, concurrency: int, max_queued: int) -> None:
        self.concurrency = concurrency
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="inference")
        self._free = concurrency
        # Waiters for a slot in arrival order, each a future resolved when the slot is theirs.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._new_waiting = 0
        """Waiters that are new jobs, the ones the queue bound counts."""
        self.running = 0
        """Steps computing in a worker thread now."""

    @property
    def waiting(self) -> int:
        """Jobs and steps waiting for a slot (the queue depth)."""
        return len(self._waiters)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one blocking call in the pool; 429 when the queue is full."""
        await self._take_slot(continuing=False)
        return await asyncio.shield(self._start_step(functools.partial(fn, *args, **kwargs)))

    def iterate(
        self, make_iterator: Callable[[], Iterator[T]], *, on_finished: Callable[[], None] | None = None
    ) -> PoolIterator[T]:
        """Drive a blocking iterator in the pool, one item per step, each step in a slot of its own.

        When the consumer stops early (a client disconnected), the iterator is closed in the pool,
        which ends a lazy generator such as faster-whisper's segments at its next item.
        `on_finished` runs once no thread touches the iterator any more: release the model the
        iterator uses there, never earlier, or a model could be unloaded under a running step.
        """
        return PoolIterator(self, make_iterator, on_finished)

    async def acquire_slot(self) -> Slot:
        """One slot for one step of a new job, for callers that choose the step's work once the slot is
        theirs (a live session reads its newest audio then). 429 when the queue is full."""
        await self._take_slot(continuing=False)
        return Slot(self)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- slots ---

    def _request_slot(self, *, continuing: bool) -> asyncio.Future[None]:
        """A future resolved once the caller holds a slot: at once when one is free."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._free > 0:
            self._free -= 1
            self.running += 1
            granted.set_result(None)
            return granted
        if not continuing:
            if self._new_waiting >= self.max_queued:
                raise PoolBusyError(retry_after_seconds=1 + len(self._waiters) // max(self.concurrency, 1))
            self._new_waiting += 1
            granted.add_done_callback(self._new_job_served)
        self._waiters.append(granted)
        return granted

    def _new_job_served(self, _granted: object) -> None:
        self._new_waiting -= 1

    async def _take_slot(self, *, continuing: bool) -> None:
        granted = self._request_slot(continuing=continuing)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot was handed over just as the caller was cancelled
            else:
                # Cancelled while waiting (awaiting the future cancelled it too): leave the queue.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(granted)
            raise

    def _release(self) -> None:
        self.running -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)
                return
        self._free += 1

    def _start_step(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run `fn` in a worker thread in a slot the caller holds; the slot is freed when the thread is done."""
        loop = asyncio.get_running_loop()
        try:
            # Run in a copy of the caller's context, so log lines from the worker carry its request id.
            step = loop.run_in_executor(self._executor, contextvars.copy_context().run, fn)
        except RuntimeError:  # the pool is shut down
            self._release()
            raise
        step.add_done_callback(self._step_done)
        return step

    def _step_done(self, step: asyncio.Future[object]) -> None:
        self._release()
        if not step.cancelled():
            step.exception()  # retrieved here so an abandoned step does not log a warning

    def _run_cleanup(self, fn: Callable[[], object], then: Callable[[], object] | None) -> None:
        """Run `fn` in the pool as the last step of a started job, without waiting; `then` on the loop after."""
        granted = self._request_slot(continuing=True)

        def start(_granted: object) -> None:
            try:
                step = self._start_step(fn)
            except RuntimeError:
                _call_safely(then)
                return
            step.add_done_callback(lambda _step: _call_safely(then))

        granted.add_done_callback(start)


class Slot:
    """A slot held for one step: start it with `run_detached`, or give the slot back unused with `finish`."""

    def __init__(self, pool: InferencePool) -> None:
        self._pool = pool
        self._spent = False

    def run_detached(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Start `fn` in this slot's worker thread; the slot is freed when the thread is done, not before."""
        if self._spent:
            raise RuntimeError("this slot has run its step already")
        self._spent = True
        return self._pool._start_step(fn)

    def finish(self) -> None:
        """Give the slot back if no step was started in it (harmless after `run_detached`)."""
        if not self._spent:
            self._spent = True
            self._pool._release()


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
        self._iterator: Iterator[T] | None = None
        """Created and advanced in worker threads only; read on the loop only between steps."""
        self._admitted = False
        self._in_flight: asyncio.Future[object] | None = None
        self._finished = False

    def __aiter__(self) -> PoolIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        try:
            await self._pool._take_slot(continuing=self._admitted)
            self._admitted = True
            if self._finished:  # closed by another task while this one waited for the slot
                self._pool._release()
                raise StopAsyncIteration
            step = self._in_flight = self._pool._start_step(self._step)
            item = await asyncio.shield(step)
        except BaseException:
            self._finish()
            raise
        if item is _END:
            self._iterator = None  # exhausted: there is nothing left to close, so no step for it
            self._finish()
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    def _step(self) -> object:
        if self._iterator is None:
            self._iterator = self._make_iterator()
        return next(self._iterator, _END)

    async def aclose(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        pending = self._in_flight
        if pending is not None and not pending.done():
            # A generator must not be closed while another thread is inside its next().
            pending.add_done_callback(lambda _step: self._close())
        else:
            self._close()

    def _close(self) -> None:
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "close", None)
        if close is None:
            _call_safely(self._on_finished)
            return
        try:
            # Closing runs the generator's cleanup (closing a decoder, say): blocking work, so in the pool.
            self._pool._run_cleanup(close, then=self._on_finished)
        except RuntimeError:  # no running loop any more: nothing can run
            _call_safely(self._on_finished)


_END = object()


def _call_safely(callback: Callable[[], object] | None) -> None:
    if callback is None:
        return
    try:
        callback()
    except Exception:
        logger.exception("pool job cleanup failed")
