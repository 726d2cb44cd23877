"""LiveTranscriber in-process with the real tiny.en model and a real inference pool: how it schedules and
bounds its work, which the WebSocket tests cannot see from outside."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from faster_whisper import WhisperModel

from speaches.config import Settings
from speaches.inference import InferencePool
from speaches.live.session import SAMPLE_RATE, SILENCE_KEEP_SECONDS, LiveTranscriber, LiveUpdate
from speaches.transcription.whisper import load_whisper_model
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, word_error_rate
from tests.live_client import pcm_of, silence

T = TypeVar("T")
FRAME = 3200  # 100 ms


@pytest.fixture(scope="module")
def model() -> Iterator[WhisperModel]:
    loaded = load_whisper_model(TINY_EN, Settings())
    yield loaded.model
    loaded.model.model.unload_model()


class CountingPool(InferencePool):
    """The real pool, counting the steps it is given."""

    def __init__(self) -> None:
        super().__init__(concurrency=1, max_queued=4)
        self.steps = 0

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        self.steps += 1
        return await super().run(fn, *args, **kwargs)


async def caught_up(transcriber: LiveTranscriber, limit_seconds: float = 30.0) -> None:
    for _ in range(int(limit_seconds / 0.01)):
        if transcriber.caught_up:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the transcriber did not catch up")


async def test_audio_arriving_faster_than_it_is_transcribed_is_taken_in_big_steps(model: WhisperModel) -> None:
    pool = CountingPool()
    updates: list[LiveUpdate] = []

    async def publish(update: LiveUpdate) -> None:
        updates.append(update)

    transcriber = LiveTranscriber(model, pool, publish, language=None, min_chunk_seconds=1.0)
    worker = asyncio.create_task(transcriber.run())
    jfk = pcm_of(AUDIO_DIR / "jfk.flac")
    # 110 frames (11 s) as fast as the socket would deliver them: yielding between frames lets the worker
    # start a step, and the frames that arrive meanwhile must not each become a step of their own.
    for offset in range(0, len(jfk), FRAME):
        transcriber.feed(jfk[offset : offset + FRAME])
        await asyncio.sleep(0)
    transcriber.end()
    text = await worker
    assert pool.steps <= 3, pool.steps
    assert word_error_rate(JFK_TEXT, text) <= 0.1
    assert "".join(update.delta for update in updates) == text
    pool.shutdown()


async def test_long_silence_keeps_the_buffer_short(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)

    async def publish(update: LiveUpdate) -> None:
        raise AssertionError(f"silence produced text: {update}")

    transcriber = LiveTranscriber(model, pool, publish, language="en", min_chunk_seconds=1.0)
    worker = asyncio.create_task(transcriber.run())
    second = silence(1.0)
    for _ in range(40):
        transcriber.feed(second)
        await caught_up(transcriber)
        assert len(transcriber.buffer) <= (SILENCE_KEEP_SECONDS + 1.0) * SAMPLE_RATE
    transcriber.end()
    assert await worker == ""
    pool.shutdown()


async def test_buffer_is_cut_at_the_bound_even_without_sentence_ends(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    longest = 0

    async def publish(update: LiveUpdate) -> None:
        pass

    # A 4 s bound: jfk (11 s) cannot fit, so the buffer must be cut at confirmed words, and the text survive.
    transcriber = LiveTranscriber(model, pool, publish, language="en", min_chunk_seconds=1.0, max_buffer_seconds=4.0)
    worker = asyncio.create_task(transcriber.run())
    jfk = pcm_of(AUDIO_DIR / "jfk.flac")
    for offset in range(0, len(jfk), SAMPLE_RATE * 2):
        transcriber.feed(jfk[offset : offset + SAMPLE_RATE * 2])
        await caught_up(transcriber)
        longest = max(longest, len(transcriber.buffer))
    transcriber.end()
    text = await worker
    # At most the bound plus the one chunk that arrived before the next cut.
    assert longest <= (4.0 + 1.0) * SAMPLE_RATE, longest / SAMPLE_RATE
    assert word_error_rate(JFK_TEXT, text) <= 0.15, text
    pool.shutdown()
