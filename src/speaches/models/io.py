"""The bounded pool for model I/O: loads, unloads, downloads, cache scans and Hub listings.

Model I/O has threads of its own, apart from asyncio's default executor and from the inference pool, so a
Hub that hangs or a slow disk never makes a transcription wait, and a flood of model requests cannot
start unbounded threads. Three lanes, each with its own threads:

- transfers (loads and downloads, the heavy part): at most `MAX_CONCURRENT_MODEL_LOADS` at once; up to
  `MAX_QUEUED_REQUESTS` more wait, and past that a request gets 503 with `Retry-After`;
- files (cache scans, listings of what is on disk, deletes, unloads): quick, never refused;
- the Hub (listings of what could be downloaded): one listing of each kind at a time, callers of the same
  listing share it, and the listing itself stops at its deadline (see `speaches.management.hub`).

A caller that goes away returns at once; the thread finishes its call and only then frees its place.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from speaches.errors import ApiError

P = ParamSpec("P")
T = TypeVar("T")

_FILE_THREADS = 2
_HUB_THREADS = 2


class ModelIOBusyError(ApiError):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "The server is busy loading or downloading other models; retry shortly.",
            status_code=503,
            code="model_io_busy",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class ModelIO:
    def __init__(self, max_transfers: int, max_waiting: int) -> None:
        self.max_transfers = max_transfers
        self.max_waiting = max_waiting
        self._transfers = ThreadPoolExecutor(max_workers=max_transfers, thread_name_prefix="model-transfer")
        self._files = ThreadPoolExecutor(max_workers=_FILE_THREADS, thread_name_prefix="model-files")
        self._hub = ThreadPoolExecutor(max_workers=_HUB_THREADS, thread_name_prefix="hub-listing")
        self._transfer_slots = asyncio.Semaphore(max_transfers)
        self.transfers_waiting = 0
        self._shared: dict[Hashable, asyncio.Future[Any]] = {}

    async def transfer(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """A load or a download: bounded in number, 503 when too many already wait."""
        if self._transfer_slots.locked() and self.transfers_waiting >= self.max_waiting:
            raise ModelIOBusyError(retry_after_seconds=1 + self.transfers_waiting // self.max_transfers)
        self.transfers_waiting += 1
        try:
            await self._transfer_slots.acquire()
        finally:
            self.transfers_waiting -= 1
        try:
            future = _submit(self._transfers, functools.partial(fn, *args, **kwargs))
        except BaseException:
            self._transfer_slots.release()
            raise
        # The slot is given back when the thread is done, not when an abandoned caller returns.
        future.add_done_callback(lambda _done: self._transfer_slots.release())
        return await asyncio.shield(future)

    async def files(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Quick disk work: scans of the caches and MODELS_DIR, deletes, unloads."""
        return await asyncio.shield(_submit(self._files, functools.partial(fn, *args, **kwargs)))

    async def hub(self, key: Hashable, fn: Callable[[], T], within_seconds: float) -> T:
        """A Hub listing, shared by every caller asking for the same `key` while it runs.

        Waits at most `within_seconds` (then TimeoutError); `fn` must stop its own work by then too.
        """
        shared = self._shared.get(key)
        if shared is None:
            shared = _submit(self._hub, fn)
            self._shared[key] = shared
            shared.add_done_callback(lambda _done: self._shared.pop(key, None))
        return await asyncio.wait_for(asyncio.shield(shared), within_seconds)  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        for executor in (self._transfers, self._files, self._hub):
            executor.shutdown(wait=False, cancel_futures=True)


def _submit(executor: ThreadPoolExecutor, fn: Callable[[], T]) -> asyncio.Future[T]:
    # In a copy of the caller's context, so log lines from the thread carry its request id.
    future = asyncio.get_running_loop().run_in_executor(executor, contextvars.copy_context().run, fn)
    future.add_done_callback(_retrieve_exception)
    return future


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an abandoned call's failure must not log "exception never retrieved"
