"""The inference pool's slots, in-process: a streamed job holds a slot only while a step computes, steps
queue first come first served, and a job that has started is never refused later."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from speaches.inference import InferencePool, PoolBusyError


def counting(limit: int) -> Iterator[int]:
    yield from range(limit)


async def test_a_paused_consumer_holds_no_slot() -> None:
    pool = InferencePool(concurrency=1, max_queued=0)
    stream = pool.iterate(lambda: counting(10))
    assert await anext(stream) == 0
    # The consumer now waits (a client not reading): the only slot is free for someone else.
    assert pool.running == 0
    assert await pool.run(lambda: "other job") == "other job"
    assert await anext(stream) == 1
    await stream.aclose()
    pool.shutdown()


async def test_steps_queue_first_come_first_served_and_started_jobs_are_never_refused() -> None:
    pool = InferencePool(concurrency=1, max_queued=1)
    order: list[str] = []
    release = threading.Event()

    def blocker() -> Iterator[str]:
        release.wait(5)
        yield "blocker"

    def named(name: str) -> Iterator[str]:
        order.append(f"{name} 1")
        yield name
        order.append(f"{name} 2")
        yield name

    held = pool.iterate(blocker)
    first_step = asyncio.create_task(anext(held))
    await asyncio.sleep(0.05)
    started = pool.iterate(lambda: named("started"))
    # Its first step waits as the one allowed new job...
    started_first = asyncio.create_task(anext(started))
    await asyncio.sleep(0.05)
    # ...so another new job is refused, but the started job's later steps never are.
    try:
        await pool.run(lambda: None)
        raise AssertionError("a second new job should be refused: the queue holds one")
    except PoolBusyError:
        pass
    release.set()
    assert await first_step == "blocker"
    await held.aclose()
    assert await started_first == "started"
    late = pool.iterate(lambda: named("late"))
    late_first = asyncio.create_task(anext(late))
    started_second = asyncio.create_task(anext(started))
    await asyncio.gather(late_first, started_second)
    # The new job's step came first because it asked first: no job jumps the queue.
    assert order == ["started 1", "late 1", "started 2"]
    await started.aclose()
    await late.aclose()
    await asyncio.sleep(0.05)
    assert pool.running == 0
    assert pool.waiting == 0
    pool.shutdown()
