"""One model manager for every kind of model: lazy loading, single-flight, reference counts, TTL unload.

A model is identified by its :class:`~speaches.models.catalog.ModelRef` (kind and canonical id), resolved
by the catalog at the edge. The first request for a model
loads it off the event loop; concurrent first requests share that one load. Every user holds a
:class:`Lease` while it uses the model (a streamed response holds its lease until the stream
ends), and a model with leases outstanding is never unloaded. When the last lease is released the
kind's TTL starts: -1 keeps the model forever, 0 unloads it at once, N unloads it after N idle
seconds. Unloading drops every reference, collects garbage and returns freed heap to the OS.

Each kind keeps at most `max_loaded` models in memory (`STT_MAX_LOADED_MODELS`, `TTS_MAX_LOADED_MODELS`):
a request for another model first unloads the least recently used idle one, and when every one is in
use it is refused with 503 and `Retry-After` rather than loading past the bound. Loads and unloads run
in the model I/O pool (`speaches.models.io`), never in asyncio's default executor.

All bookkeeping happens on the event loop thread, so it needs no locks; only the kind's `load` and
`unload` callables run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import enum
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from speaches import metrics
from speaches.errors import ApiError, ConflictError, NotFoundError
from speaches.models.catalog import Kind, ModelRef
from speaches.models.io import ModelIO

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")


@dataclass(frozen=True)
class ModelKind(Generic[ModelT]):
    """How to load and unload one kind of model."""

    name: Kind
    load: Callable[[ModelRef], LoadedModel[ModelT]]
    """Blocking: resolve the id to files and load them. Raises ApiError for unknown/corrupt models."""
    ttl: Callable[[], int]
    """Seconds idle before unload (-1 never, 0 right away); read on every release so tests can vary it."""
    unload: Callable[[ModelT], None] | None = None
    """Blocking: free what the garbage collector cannot (e.g. explicit GPU/CT2 unload)."""
    max_loaded: Callable[[], int] | None = None
    """How many models of this kind may be in memory at once; None: no bound. Read on every load."""
    setting: str = ""
    """The setting behind `max_loaded`, for error messages."""


class ModelCapacityError(ApiError):
    """503: the kind's bound on loaded models is reached and every loaded model is in use."""

    def __init__(self, kind: ModelKind[Any], limit: int, busy: list[str]) -> None:
        what = "speech-to-text models" if kind.name is Kind.STT else "text-to-speech voices"
        setting = f" ({kind.setting})" if kind.setting else ""
        super().__init__(
            f"This server keeps at most {limit} {what} loaded{setting}, and all of them are in use "
            f"({', '.join(busy)}). Retry shortly, or use one of those.",
            status_code=503,
            code="model_capacity_reached",
            headers={"Retry-After": "5"},
        )


@dataclass
class LoadedModel(Generic[ModelT]):
    """What a kind's `load` returns: the model object and where it lives."""

    model: ModelT
    device: str


class State(enum.StrEnum):
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"


@dataclass(eq=False)
class _Entry:
    kind: ModelKind[Any]
    ref: ModelRef
    state: State
    transition: asyncio.Task[None]
    """The load or unload in progress (or the one that last completed)."""
    refs: int = 0
    """Leases held plus requests waiting for this model to load."""
    loaded: LoadedModel[Any] | None = None
    last_used: float = field(default_factory=time.time)
    expires_at: float | None = None
    expiry: asyncio.TimerHandle | None = None

    @property
    def model_id(self) -> str:
        return self.ref.id


@dataclass(frozen=True)
class ModelStatus:
    """A loaded (or loading) model as /api/ps shows it."""

    ref: ModelRef
    state: State
    device: str | None
    ref_count: int
    last_used: float
    expires_at: float | None

    @property
    def model_id(self) -> str:
        return self.ref.id

    @property
    def kind(self) -> Kind:
        return self.ref.kind


class Lease(Generic[ModelT]):
    """The right to use a loaded model until `release()`; releasing twice is harmless."""

    def __init__(self, manager: ModelManager, entry: _Entry) -> None:
        self._manager = manager
        self._entry: _Entry | None = entry
        assert entry.loaded is not None
        self._model: ModelT | None = entry.loaded.model
        self.ref = entry.ref
        self.model_id = entry.model_id
        self.device = entry.loaded.device

    @property
    def model(self) -> ModelT:
        if self._model is None:
            raise RuntimeError(f"the lease on {self.model_id} was released; acquire the model again to use it")
        return self._model

    def release(self) -> None:
        # Drop the model reference too: a released lease that lingers (in a frame, a traceback) must
        # not keep an unloaded model's memory alive.
        entry, self._entry, self._model = self._entry, None, None
        if entry is not None:
            self._manager._release(entry)

    def __del__(self) -> None:
        # A lease dropped without release (a bug) must not pin the model forever; but __del__ may
        # run on any thread, so only warn and hand the release to the loop.
        if self._entry is not None:
            logger.warning("lease on %s was garbage-collected without release", self.model_id)
            entry, self._entry, self._model = self._entry, None, None
            with contextlib.suppress(RuntimeError):
                self._manager._loop.call_soon_threadsafe(self._manager._release, entry)


class ModelManager:
    """Loads, shares and unloads models of every registered kind. Use from the event loop only."""

    def __init__(self, io: ModelIO | None = None) -> None:
        self._kinds: dict[Kind, ModelKind[Any]] = {}
        self._entries: dict[ModelRef, _Entry] = {}
        self._loop = asyncio.get_running_loop()
        self.io = io or ModelIO(max_transfers=2, max_waiting=64)
        """The model I/O pool: loads and unloads run here, and so does the management API's disk and Hub work."""
        self._closed = False
        keep_large_allocations_returnable()

    def register(self, kind: ModelKind[Any]) -> None:
        self._kinds[kind.name] = kind

    def kind(self, name: Kind) -> ModelKind[Any]:
        return self._kinds[name]

    # --- using models ---

    async def acquire(self, ref: ModelRef) -> Lease[Any]:
        """Lease the model, loading it first if needed. Raises the loader's ApiError on failure."""
        kind = self._kinds[ref.kind]
        while True:
            entry = self._entries.get(ref)
            if entry is None:
                if self._is_full(kind):
                    await self._make_room(kind)
                    continue  # the world may have changed meanwhile: look again
                entry = self._start_load(kind, ref)
            if entry.state is State.UNLOADING:
                # Let the unload finish, then load afresh (an unload never fails a request).
                with contextlib.suppress(Exception):
                    await asyncio.shield(entry.transition)
                continue
            entry.refs += 1
            self._cancel_expiry(entry)
            try:
                if entry.state is State.LOADING:
                    await asyncio.shield(entry.transition)
            except BaseException:
                entry.refs -= 1
                if entry.state is State.LOADED:
                    self._schedule_expiry(entry)
                raise
            if entry.state is not State.LOADED:  # pragma: no cover - a load leaves LOADED or raises
                entry.refs -= 1
                continue
            entry.last_used = time.time()
            return Lease(self, entry)

    @contextlib.asynccontextmanager
    async def use(self, ref: ModelRef) -> AsyncIterator[Lease[Any]]:
        lease = await self.acquire(ref)
        try:
            yield lease
        finally:
            lease.release()

    # --- explicit control (management API, preload) ---

    async def load(self, ref: ModelRef) -> bool:
        """Load without holding it; returns False if it was already loaded. TTL applies afterwards."""
        already = self._entries.get(ref)
        was_loaded = already is not None and already.state is State.LOADED
        lease = await self.acquire(ref)
        lease.release()
        return not was_loaded

    async def unload(self, ref: ModelRef) -> None:
        """Unload now. 404 if not loaded, 409 if in use or still loading."""
        model_id = ref.id
        entry = self._entries.get(ref)
        if entry is None or entry.state is State.UNLOADING:
            raise NotFoundError(f"The model '{model_id}' is not loaded.", param="model_id", code="model_not_loaded")
        if entry.state is State.LOADING:
            raise ConflictError(
                f"The model '{model_id}' is still loading; try again when it is loaded.", code="model_loading"
            )
        if entry.refs > 0:
            raise ConflictError(
                f"The model '{model_id}' is in use by {entry.refs} request(s); it stays loaded. "
                "Try again when they finish.",
                code="model_in_use",
            )
        await asyncio.shield(self._start_unload(entry))

    def status(self) -> list[ModelStatus]:
        return [
            ModelStatus(
                ref=entry.ref,
                state=entry.state,
                device=entry.loaded.device if entry.loaded else None,
                ref_count=entry.refs,
                last_used=entry.last_used,
                expires_at=entry.expires_at,
            )
            for entry in self._entries.values()
        ]

    def status_of(self, ref: ModelRef) -> ModelStatus | None:
        return next((status for status in self.status() if status.ref == ref), None)

    def is_loaded(self, ref: ModelRef) -> bool:
        entry = self._entries.get(ref)
        return entry is not None and entry.state is State.LOADED

    async def close(self) -> None:
        """Unload everything nobody uses (server shutdown).

        A model still leased stays: a step cut off by the shutdown may still run in its thread (a thread
        cannot be interrupted), and freeing the model under it can crash the process (seen: SIGSEGV at
        exit). Its memory goes with the process, which exits once that thread is done.
        """
        self._closed = True
        for entry in list(self._entries.values()):
            self._cancel_expiry(entry)
            if entry.state is State.LOADING:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(entry.transition)
        for entry in list(self._entries.values()):
            if entry.state is State.LOADED and entry.refs > 0:
                logger.info(
                    "%s model %s is still in use at shutdown; left to the process exit", entry.kind.name, entry.model_id
                )
            elif entry.state is State.LOADED:
                self._start_unload(entry)
            if entry.state is State.UNLOADING:
                with contextlib.suppress(Exception):
                    await asyncio.shield(entry.transition)
        self.io.shutdown()

    # --- internals ---

    def _is_full(self, kind: ModelKind[Any]) -> bool:
        if kind.max_loaded is None:
            return False
        return sum(1 for entry in self._entries.values() if entry.kind.name == kind.name) >= kind.max_loaded()

    async def _make_room(self, kind: ModelKind[Any]) -> None:
        """One step towards room for one more model of `kind`: wait for an unload, or start one, or refuse."""
        entries = [entry for entry in self._entries.values() if entry.kind.name == kind.name]
        unloading = next((entry for entry in entries if entry.state is State.UNLOADING), None)
        if unloading is None:
            idle = [entry for entry in entries if entry.state is State.LOADED and entry.refs == 0]
            if not idle:
                assert kind.max_loaded is not None
                raise ModelCapacityError(kind, kind.max_loaded(), sorted(entry.model_id for entry in entries))
            unloading = min(idle, key=lambda entry: entry.last_used)
            logger.info("unloading idle %s model %s to make room for another", kind.name, unloading.model_id)
            self._start_unload(unloading)
        # Counted until its memory is back, so the bound holds for memory, not just for entries.
        with contextlib.suppress(Exception):
            await asyncio.shield(unloading.transition)

    def _start_load(self, kind: ModelKind[Any], ref: ModelRef) -> _Entry:
        entry = _Entry(kind=kind, ref=ref, state=State.LOADING, transition=None)  # type: ignore[arg-type]
        entry.transition = asyncio.create_task(self._load(entry), name=f"load {ref}")
        # Waiters see the failure through shield(); this keeps asyncio quiet when none is left.
        entry.transition.add_done_callback(_retrieve_exception)
        self._entries[ref] = entry
        return entry

    async def _load(self, entry: _Entry) -> None:
        started = time.perf_counter()
        try:
            entry.loaded = await self.io.transfer(entry.kind.load, entry.ref)
        except BaseException as error:
            metrics.record_model_load_failure(entry.kind.name)
            # Forget the failed attempt so the next request tries again.
            if self._entries.get(entry.ref) is entry:
                del self._entries[entry.ref]
            if not isinstance(error, ApiError):
                logger.exception("loading %s model %s failed", entry.kind.name, entry.model_id)
            raise
        entry.state = State.LOADED
        entry.last_used = time.time()
        metrics.record_model_load(entry.kind.name, time.perf_counter() - started)
        logger.info(
            "loaded %s model %s on %s in %.2f s",
            entry.kind.name,
            entry.model_id,
            entry.loaded.device,
            time.perf_counter() - started,
        )
        if entry.refs == 0:
            self._schedule_expiry(entry)

    def _release(self, entry: _Entry) -> None:
        entry.refs -= 1
        entry.last_used = time.time()
        if entry.refs == 0 and entry.state is State.LOADED:
            self._schedule_expiry(entry)

    def _schedule_expiry(self, entry: _Entry) -> None:
        self._cancel_expiry(entry)
        if self._closed:
            return
        ttl = entry.kind.ttl()
        if ttl < 0:
            return
        entry.expires_at = time.time() + ttl
        entry.expiry = self._loop.call_later(ttl, self._expire, entry)

    def _cancel_expiry(self, entry: _Entry) -> None:
        if entry.expiry is not None:
            entry.expiry.cancel()
            entry.expiry = None
        entry.expires_at = None

    def _expire(self, entry: _Entry) -> None:
        entry.expiry = None
        if entry.refs == 0 and entry.state is State.LOADED and self._entries.get(entry.ref) is entry:
            self._start_unload(entry)

    def _start_unload(self, entry: _Entry) -> asyncio.Task[None]:
        self._cancel_expiry(entry)
        entry.state = State.UNLOADING
        entry.transition = asyncio.create_task(self._unload(entry), name=f"unload {entry.ref}")
        return entry.transition

    async def _unload(self, entry: _Entry) -> None:
        loaded, entry.loaded = entry.loaded, None
        try:
            if loaded is not None:
                await self.io.files(_free_model, entry.kind, loaded)
            del loaded
            await self.io.files(release_freed_memory)
        finally:
            # Forgotten only now: a request for the same model waits on this unload, so a reload
            # starts once the memory is back, and the log always reads load, unload, load.
            if self._entries.get(entry.ref) is entry:
                del self._entries[entry.ref]
            metrics.record_model_unload(entry.kind.name)
            logger.info("unloaded %s model %s", entry.kind.name, entry.model_id)


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _free_model(kind: ModelKind[Any], loaded: LoadedModel[Any]) -> None:
    if kind.unload is not None:
        try:
            kind.unload(loaded.model)
        except Exception:
            logger.exception("unloading %s model failed; dropping references anyway", kind.name)
    loaded.model = None


_libc: Any = None

# glibc's mallopt parameter number and the size from which allocations get their own mapping.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else False
    return _libc


def keep_large_allocations_returnable() -> None:
    """Fix glibc's mmap threshold so that freed model memory can go back to the OS.

    By default glibc raises its mmap threshold (up to 32 MiB) and, with it, the trim threshold
    (to twice that) each time a large mapped block is freed. After the first unload, later model
    weights then land in the per-thread arenas, whose free top chunks `malloc_trim` does not return:
    measured on faster-whisper-base, every load/unload cycle kept 40-90 MB more. A fixed threshold
    (any explicit M_MMAP_THRESHOLD turns the adjustment off) keeps blocks of 4 MiB and more in their
    own mappings, returned on free, and keeps the trim threshold at its 128 KiB default. Measured
    cost in transcription: about a tenth more system time (page faults), total CPU time within noise.
    `MALLOC_MMAP_THRESHOLD_` in the environment wins.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    libc = _load_libc()
    if libc and hasattr(libc, "mallopt"):
        libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD_BYTES))


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS drops after an unload."""
    gc.collect()
    libc = _load_libc()
    if libc and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
