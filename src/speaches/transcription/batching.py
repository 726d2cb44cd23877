"""Cross-request batching: one queue per loaded whisper model, in front of CTranslate2.

Every user of a whisper model (HTTP transcription and translation in either mode, live sessions, the
Realtime API, Wyoming) reaches CTranslate2 through faster-whisper's `WhisperModel.model`. A loaded model's
`model` is a :class:`BatchingWhisper`: it stands in for `ctranslate2.models.Whisper`, so faster-whisper's
own decoding (seeking through 30 s windows, prompts, temperature fallback, word timestamps) runs unchanged
in each job's pool thread, while the model calls of different jobs that wait at the same time become one
CTranslate2 call over all their windows. CTranslate2 decodes a batch far more cheaply than the same windows
one by one, and a model with one replica runs one call at a time anyway, so calls that would have queued
inside CTranslate2 queue here instead, where they can be merged.

The queue serves calls first come, first served, at most `num_workers` (the model's replicas) at a time.
When a replica is free, the oldest call goes, and with it every queued call that CTranslate2 can decode in
the same pass (same call, same options, prompts of the same shape), up to `WHISPER__MAX_BATCH_SIZE`
windows. Before a batch that is not full goes, it may wait up to `WHISPER__BATCH_WAIT_MS` for companions,
but only while another unfinished job that used the model a moment ago (`ACTIVE_SECONDS`), or that has
another call queued, is not in it: a lone request never waits, and a batch goes as soon as everyone who
could join has. A waiting batch keeps its place while the calls behind it that cannot join go ahead.

Merging never changes a result (`batch_calls.py` says which calls merge and why that holds). A merged
call that fails is retried call by call, so one job's bad input never fails another's.

A job whose client leaves cancels its :class:`CancelToken`: its queued calls leave the queue at once (the
thread gets `BatchCancelledError`), and a batch already running finishes without waiting for it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

from speaches import metrics
from speaches.transcription.batch_calls import (
    GENERATE_DEFAULTS,
    Align,
    Call,
    CallKind,
    DetectLanguage,
    Encode,
    Generate,
    features_key,
    host_array,
    windows_of,
)

logger = logging.getLogger(__name__)

ACTIVE_SECONDS = 0.5
"""A job that finished a model call this recently may make another soon: a batch may wait for it."""


class BatchCancelledError(Exception):
    """Raised in a job's thread when its call left the queue because the job was cancelled."""

    def __init__(self) -> None:
        super().__init__("the job was cancelled while its model call waited for a batch")


class CancelToken:
    """Cancelled when a job's client leaves; the job's queued model calls then leave their queues."""

    def __init__(self) -> None:
        self._cancelled = False
        self._lock = threading.Lock()
        self._queues: dict[int, BatchingWhisper] = {}

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Safe from any thread, any number of times; never waits for a running batch. Cancelling a job that
        has finished also tells its queues that it will make no more calls, so no batch waits for it."""
        with self._lock:
            self._cancelled = True
            queues = list(self._queues.values())
        for queue in queues:
            queue._job_left(self)

    def _watch(self, queue: BatchingWhisper) -> None:
        with self._lock:
            self._queues.setdefault(id(queue), queue)


_CURRENT_TOKEN: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar("batch_cancel", default=None)


def bind_cancel_token() -> CancelToken:
    """A new token for the job started from the current context (the inference pool copies the context
    into each step, so the job's model calls see it). Cancel it when the job's client leaves."""
    token = CancelToken()
    _CURRENT_TOKEN.set(token)
    return token


def cancel_with_current_task() -> CancelToken:
    """Like `bind_cancel_token`, cancelled when the current asyncio task ends (for a session's worker task)."""
    import asyncio

    token = bind_cancel_token()
    asyncio.current_task().add_done_callback(lambda _task: token.cancel())  # type: ignore[union-attr]
    return token


# --- the queue ---


class BatchingWhisper:
    """Stands in for a `ctranslate2.models.Whisper`, merging the calls of concurrent jobs (see the module).

    Everything but `encode`, `generate`, `detect_language` and `align` is the wrapped model's own.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_batch_size: int,
        wait_seconds: float,
        sot_id: int,
        no_timestamps_id: int,
        merge_encodes: bool,
    ) -> None:
        self._model = model
        self._merge_encodes = merge_encodes
        self._max_items = max_batch_size
        self._wait = wait_seconds
        self._workers = max(1, int(getattr(model, "num_workers", 1)))
        self._cond = threading.Condition()
        self._queue: list[Call] = []
        self._running = 0
        self._busy_jobs: set[Hashable] = set()
        """Jobs whose calls are in a running batch."""
        self._last_finished: dict[Hashable, float] = {}
        """When each job's last call finished (forgotten after ACTIVE_SECONDS, or when the job ends)."""
        self._hold_until: float | None = None
        self._replica_freed = 0.0
        """When a replica last became free: a call that waited for a busy model waits for companions from then."""
        self._encode = Encode()
        self._detect = DetectLanguage()
        self._align = Align()
        self._generate = Generate(sot_id, no_timestamps_id)
        self.batch_sizes: Counter[tuple[str, int]] = Counter()
        """How many batches of each (call, windows) ran: bounded by 4 calls x MAX_BATCH_SIZE (and larger
        single calls). The metrics say the same per process; this is per model."""
        self.longest_wait = 0.0
        """The longest a call waited in this queue, in seconds."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def wrapped(self) -> Any:
        """The `ctranslate2.models.Whisper` itself."""
        return self._model

    @property
    def queued(self) -> int:
        """Calls waiting in the queue now."""
        with self._cond:
            return len(self._queue)

    # --- the calls faster-whisper makes ---

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        array = host_array(features)
        key = features_key("encode", array) if self._merge_encodes else None
        return self._submit(Call(self._encode, key, windows_of(array), (features, array), {"to_cpu": to_cpu}))

    def detect_language(self, features: Any) -> Any:
        array = host_array(features)
        return self._submit(
            Call(self._detect, features_key("detect_language", array), windows_of(array), (features, array), {})
        )

    def align(
        self,
        features: Any,
        start_sequence: Sequence[int],
        text_tokens: Sequence[Sequence[int]],
        num_frames: int | Sequence[int],
        **options: Any,
    ) -> Any:
        array = host_array(features)
        frames = [num_frames] * len(text_tokens) if isinstance(num_frames, int) else list(num_frames)
        key = Align.key(array, start_sequence, frames, options) if len(frames) == len(text_tokens) else None
        args = (features, array, start_sequence, text_tokens, num_frames if key is None else frames)
        return self._submit(Call(self._align, key, max(len(text_tokens), 1), args, options))

    def generate(self, features: Any, prompts: Sequence[Sequence[int]], **options: Any) -> Any:
        array = host_array(features)
        if not set(options) <= set(GENERATE_DEFAULTS):  # an option this queue does not know: run it as asked
            return self._submit(Call(self._generate, None, len(prompts), (features, array, prompts), options))
        full = {**GENERATE_DEFAULTS, **options}
        key = self._generate.key(array, prompts, full)
        return self._submit(Call(self._generate, key, len(prompts), (features, array, prompts), full))

    # --- queueing ---

    def _submit(self, call: Call) -> Any:
        token = call.token = _CURRENT_TOKEN.get()
        if token is not None:
            if token.cancelled:
                raise BatchCancelledError
            token._watch(self)
            call.job = token
        with self._cond:
            self._last_finished.pop(call.job, None)
            self._queue.append(call)
            while True:
                self._dispatch()
                if call.state == "leading":
                    break
                if call.state == "done":
                    return _outcome(call)
                if token is not None and token.cancelled and call.state == "queued":
                    self._queue.remove(call)
                    metrics.record_batch_withdrawn(call.kind.name)
                    self._dispatch()
                    self._cond.notify_all()
                    raise BatchCancelledError
                hold = self._hold_until
                self._cond.wait(None if hold is None else max(hold - time.monotonic(), 0.0005))
        self._run(call)
        return _outcome(call)

    def _job_left(self, token: CancelToken) -> None:
        """A job was cancelled or is over: its queued calls leave (their threads see it), nobody waits for it."""
        with self._cond:
            self._last_finished.pop(token, None)
            self._cond.notify_all()

    def _dispatch(self) -> None:
        """Start every batch that may start now (with the lock held); set `_hold_until` while one waits."""
        self._hold_until = None
        waiting: set[int] = set()  # calls of batches that wait for companions
        while self._running < self._workers:
            members = self._next_batch(waiting)
            if members is None:
                return
            head = members[0]
            for member in members:
                self._queue.remove(member)
                member.state = "assigned"
                self._busy_jobs.add(member.job)
            head.state = "leading"
            head.batch = members
            self._running += 1
            self._cond.notify_all()

    def _next_batch(self, waiting: set[int]) -> list[Call] | None:
        """The oldest batch that may start now, or None (with the lock held).

        The oldest batch, when it is not full and may wait for companions (`_hold_for_companions`), keeps its
        place, and `_hold_until` says until when; meanwhile the calls behind it that cannot join it go ahead
        without waiting, so the model does not stand idle: one of them may be the very call (an encoder pass,
        say) after which a companion comes with its part of the batch.
        """
        for index, head in enumerate(self._queue):
            if id(head) in waiting:
                continue
            members = [head]
            items = head.windows
            if head.key is None:
                return members
            for other in self._queue[index + 1 :]:
                if other.key == head.key and id(other) not in waiting and items + other.windows <= self._max_items:
                    members.append(other)
                    items += other.windows
            # Only the oldest batch waits: the calls behind it go as they are, or two batches that each wait
            # for the other's job would leave the model idle for the whole wait.
            if items >= self._max_items or waiting:
                return members
            hold = self._hold_for_companions(head, members)
            if hold is None:
                return members
            waiting.update(id(member) for member in members)
            self._hold_until = hold
        return None

    def _hold_for_companions(self, head: Call, members: list[Call]) -> float | None:
        """Until when the batch `head` leads may wait, or None: while it is within the wait (counted from when it
        first waited with a replica free, so calls going ahead cannot starve it) and a job that used
        the model a moment ago (and so may use it again) is neither in the batch nor running. A job with another
        call queued counts: that call goes ahead meanwhile, and the job may come back with its part of this batch."""
        now = time.monotonic()
        start = head.held_since if head.held_since is not None else max(head.arrived, self._replica_freed)
        deadline = start + self._wait
        if now >= deadline:
            return None
        joined = {call.job for call in members}
        latest: float | None = None
        for job, finished in list(self._last_finished.items()):
            if now - finished >= ACTIVE_SECONDS:
                del self._last_finished[job]
            elif job not in joined and job not in self._busy_jobs:
                latest = max(latest or 0.0, finished + ACTIVE_SECONDS)
        if any(call.job not in joined for call in self._queue):
            latest = deadline
        if latest is None:
            return None
        head.held_since = start
        return min(deadline, latest)

    def _run(self, leader: Call) -> None:
        """Run the batch `leader` leads, in its thread, outside the lock; hand every member its outcome."""
        members = leader.batch or [leader]
        started = time.monotonic()
        outcomes: list[tuple[Any, BaseException | None]] | None = None
        try:
            outcomes = self._outcomes(leader.kind, members)
        finally:
            if outcomes is None:  # interrupted: nobody may wait for ever
                outcomes = [(None, RuntimeError("the batch was interrupted"))] * len(members)
            waits = [started - member.arrived for member in members]
            windows = sum(member.windows for member in members)
            metrics.record_batch(leader.kind.name, windows, waits)
            finished = time.monotonic()
            with self._cond:
                for member, (result, error) in zip(members, outcomes, strict=True):
                    member.result, member.error, member.state = result, error, "done"
                    self._busy_jobs.discard(member.job)
                    if not (isinstance(member.job, CancelToken) and member.job.cancelled):
                        self._last_finished[member.job] = finished
                self.batch_sizes[leader.kind.name, windows] += 1
                self.longest_wait = max(self.longest_wait, *waits)
                self._running -= 1
                self._replica_freed = finished
                self._dispatch()
                self._cond.notify_all()

    def _outcomes(self, kind: CallKind, members: list[Call]) -> list[tuple[Any, BaseException | None]]:
        try:
            return [(result, None) for result in kind.run(self._model, members)]
        except Exception as error:
            if len(members) == 1:
                return [(None, error)]
            logger.warning(
                "a merged %s of %d calls failed (%s); running them one by one", kind.name, len(members), error
            )
            return [self._outcomes(kind, [member])[0] for member in members]


def _outcome(call: Call) -> Any:
    if call.error is not None:
        raise call.error
    return call.result
