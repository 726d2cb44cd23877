"""The bounded inference pool: admission, 429, slots held until threads finish, iterators closed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from speaches.inference import InferencePool, PoolBusyError


async def test_runs_blocking_work_off_the_event_loop() -> None:
    pool = InferencePool(concurrency=2, max_queued=4)
    loop_thread = threading.get_ident()
    worker_thread = await pool.run(threading.get_ident)
    assert worker_thread != loop_thread
    pool.shutdown()


async def test_concurrency_is_bounded_and_overflow_gets_429() -> None:
    pool = InferencePool(concurrency=1, max_queued=1)
    release = threading.Event()
    running = asyncio.create_task(pool.run(release.wait, 5))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(pool.run(time.time))
    await asyncio.sleep(0.05)
    assert pool.running == 1
    assert pool.waiting == 1
    with pytest.raises(PoolBusyError) as refused:
        await pool.run(time.time)
    assert refused.value.status_code == 429
    assert refused.value.headers is not None
    assert int(refused.value.headers["Retry-After"]) >= 1
    release.set()
    assert await running is True
    assert await queued > 0
    assert pool.running == 0
    assert pool.waiting == 0
    pool.shutdown()


async def test_a_cancelled_caller_keeps_its_slot_until_the_thread_is_done() -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    release = threading.Event()
    abandoned = asyncio.create_task(pool.run(release.wait, 5))
    await asyncio.sleep(0.05)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    # The thread still runs, so the slot is still taken: a new job must wait.
    follower = asyncio.create_task(pool.run(time.time))
    await asyncio.sleep(0.1)
    assert not follower.done()
    assert pool.running == 1
    release.set()
    await asyncio.wait_for(follower, 5)
    assert pool.running == 0
    pool.shutdown()


async def test_iterate_closes_the_iterator_when_the_consumer_stops_early() -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    produced: list[int] = []
    closed = threading.Event()

    def numbers() -> Iterator[int]:
        try:
            for number in range(1000):
                produced.append(number)
                yield number
        finally:
            closed.set()

    async def take_three() -> list[int]:
        taken = []
        stream = pool.iterate(numbers)
        async for number in stream:
            taken.append(number)
            if len(taken) == 3:
                break
        await stream.aclose()
        return taken

    assert await take_three() == [0, 1, 2]
    await asyncio.get_running_loop().run_in_executor(None, closed.wait, 5)
    assert closed.is_set()
    assert len(produced) <= 4
    await asyncio.sleep(0.05)
    assert pool.running == 0
    pool.shutdown()


async def test_iterate_closes_the_iterator_when_cancelled_mid_step() -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    step_started = threading.Event()
    finish_step = threading.Event()
    closed = threading.Event()

    def slow() -> Iterator[int]:
        try:
            yield 1
            step_started.set()
            finish_step.wait(5)
            yield 2
            yield 3
        finally:
            closed.set()

    async def consume() -> None:
        async for _ in pool.iterate(slow):
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.get_running_loop().run_in_executor(None, step_started.wait, 5)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert not closed.is_set()  # the step in flight must finish before the generator is closed
    finish_step.set()
    await asyncio.get_running_loop().run_in_executor(None, closed.wait, 5)
    assert closed.is_set()
    await asyncio.sleep(0.05)
    assert pool.running == 0
    pool.shutdown()


async def test_on_finished_waits_for_the_step_in_flight() -> None:
    """A model lease released in on_finished is never given back while a thread still uses it."""
    pool = InferencePool(concurrency=1, max_queued=4)
    step_started = threading.Event()
    finish_step = threading.Event()
    finished = asyncio.Event()

    def slow() -> Iterator[int]:
        step_started.set()
        finish_step.wait(5)
        yield 1

    async def consume() -> None:
        async for _ in pool.iterate(slow, on_finished=finished.set):
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.get_running_loop().run_in_executor(None, step_started.wait, 5)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await asyncio.sleep(0.1)
    assert not finished.is_set()
    finish_step.set()
    await asyncio.wait_for(finished.wait(), 5)
    assert pool.running == 0
    pool.shutdown()


async def test_on_finished_runs_when_iteration_never_started() -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    finished: list[bool] = []
    stream = pool.iterate(lambda: iter([1, 2]), on_finished=lambda: finished.append(True))
    await stream.aclose()
    await stream.aclose()
    assert finished == [True]
    assert [item async for item in stream] == []
    pool.shutdown()
