"""LiveTranscriber in-process with the real tiny.en model and a real inference pool: how it schedules and
bounds its work, which the WebSocket tests cannot see from outside."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator

import pytest
from faster_whisper import WhisperModel

from speaches.config import Settings
from speaches.inference import InferencePool
from speaches.live.local_agreement import normalize_word
from speaches.live.session import (
    MAX_LEAD_SECONDS,
    MAX_STEP_SECONDS,
    SAMPLE_RATE,
    SILENCE_KEEP_SECONDS,
    STEP_NEW_SECONDS,
    LiveTranscriber,
    LiveUpdate,
)
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.whisper import load_whisper_model
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, word_error_rate
from tests.live.live_client import eventually, float_to_pcm, pcm_of, silence
from tests.live.speech_corpus import (
    licence_jfk_lamp,
    missing_sentences,
    programme,
    recordings,
    scripted_sentences,
    spoken,
)

FRAME = 3200  # 100 ms

pytestmark = pytest.mark.slow  # the real model in-process: tens of seconds


@pytest.fixture(scope="module")
def model() -> Iterator[WhisperModel]:
    loaded = load_whisper_model(ModelRef(Kind.STT, TINY_EN), Settings())
    yield loaded.model
    loaded.model.model.unload_model()


async def caught_up(transcriber: LiveTranscriber, limit_seconds: float = 30.0) -> None:
    for _ in range(int(limit_seconds / 0.01)):
        if transcriber.caught_up:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the transcriber did not catch up")


async def collect(transcriber: LiveTranscriber) -> list[LiveUpdate]:
    return [update async for update in transcriber.updates()]


async def test_audio_arriving_faster_than_it_is_transcribed_is_taken_in_big_steps(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    transcriber = LiveTranscriber(model, pool, language=None, min_chunk_seconds=1.0)
    worker = asyncio.create_task(collect(transcriber))
    jfk = pcm_of(AUDIO_DIR / "jfk.flac")
    # 110 frames (11 s) as fast as the socket would deliver them: yielding between frames lets the worker
    # start a step, and the frames that arrive meanwhile must not each become a step of their own.
    for offset in range(0, len(jfk), FRAME):
        transcriber.feed(jfk[offset : offset + FRAME])
        await asyncio.sleep(0)
    transcriber.end()
    updates = await worker
    text = transcriber.text
    # Not one step per frame: at most STEP_NEW_SECONDS of new audio per step, plus the first one.
    assert transcriber.steps <= math.ceil(11.0 / STEP_NEW_SECONDS) + 1, transcriber.steps
    assert word_error_rate(JFK_TEXT, text) <= 0.1
    assert "".join(update.delta for update in updates) == text
    pool.shutdown()


async def test_long_silence_keeps_the_buffer_short(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=1.0)
    worker = asyncio.create_task(collect(transcriber))
    second = silence(1.0)
    for _ in range(40):
        transcriber.feed(second)
        await caught_up(transcriber)
        assert len(transcriber.buffer) <= (SILENCE_KEEP_SECONDS + 1.0) * SAMPLE_RATE
    transcriber.end()
    assert await worker == [], "silence produced text"
    assert transcriber.text == ""
    pool.shutdown()


async def test_buffer_is_cut_at_the_bound_even_without_sentence_ends(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    longest = 0
    # A 4 s bound: jfk (11 s) cannot fit, so the buffer must be cut at confirmed words, and the text survive.
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=1.0, max_buffer_seconds=4.0)
    worker = asyncio.create_task(collect(transcriber))
    jfk = pcm_of(AUDIO_DIR / "jfk.flac")
    for offset in range(0, len(jfk), SAMPLE_RATE * 2):
        transcriber.feed(jfk[offset : offset + SAMPLE_RATE * 2])
        await caught_up(transcriber)
        longest = max(longest, len(transcriber.buffer))
    transcriber.end()
    await worker
    text = transcriber.text
    # At most the bound plus the one chunk that arrived before the next cut.
    assert longest <= (4.0 + 1.0) * SAMPLE_RATE, longest / SAMPLE_RATE
    # A 4 s buffer is a hard test for tiny.en. Its numerics differ between CPUs: on one 2-vCPU host the text
    # came out whole; on one without AVX-512 the last 4 s buffer was heard as "for your country?" ("your" at
    # p 0.00) and "can do for your" was lost (0.27). Losing more than a clause is still far above the bound.
    assert word_error_rate(JFK_TEXT, text) <= 0.3, text
    pool.shutdown()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_client_sending_faster_than_real_time_is_held_to_one_step_of_audio(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    clock = FakeClock()  # stands still: every second arrives at once
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=1.0, clock=clock)
    second = silence(1.0)
    fed = 0
    while transcriber.has_room:
        transcriber.feed(second)
        fed += 1
    # No worker has taken any of it: the receive loop stops once the next step's audio is in.
    assert fed == math.ceil(MAX_STEP_SECONDS), fed
    waiting = asyncio.create_task(transcriber.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    clock.now += 60.0  # time spent held back is no excuse: this client is still far ahead of real time
    assert not transcriber.has_room
    worker = asyncio.create_task(collect(transcriber))
    async with asyncio.timeout(30):
        await waiting  # the first step heard its audio, and the cut after it made room
    assert len(transcriber.buffer) < MAX_STEP_SECONDS * SAMPLE_RATE
    transcriber.end()
    await worker
    pool.shutdown()


async def test_a_real_time_client_rides_out_a_slow_server_up_to_the_pending_bound(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    clock = FakeClock()
    transcriber = LiveTranscriber(
        model, pool, language="en", min_chunk_seconds=1.0, max_pending_seconds=30.0, clock=clock
    )
    second = silence(1.0)
    # A second a second, and no step runs (the server is behind): read on, past one step's audio.
    for _ in range(30):
        assert transcriber.has_room, transcriber.received_seconds
        transcriber.feed(second)
        clock.now += 1.0
    assert not transcriber.has_room, "30 s wait for a step: even a real-time client is held now"
    waiting = asyncio.create_task(transcriber.wait_for_room())
    await asyncio.sleep(0.05)
    clock.now += 60.0
    assert not waiting.done()
    assert not transcriber.has_room
    worker = asyncio.create_task(collect(transcriber))
    async with asyncio.timeout(30):
        await waiting
    transcriber.end()
    await worker
    pool.shutdown()


async def test_a_pause_in_sending_earns_no_allowance_for_a_flood(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    clock = FakeClock()
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=1.0, clock=clock)
    second = silence(1.0)
    for _ in range(math.ceil(MAX_STEP_SECONDS)):
        transcriber.feed(second)
        clock.now += 1.0
    clock.now += 120.0  # the client sends nothing for two minutes, then floods
    flooded = 0
    while transcriber.has_room:
        transcriber.feed(second)
        flooded += 1
    # Read on only until it ran MAX_LEAD_SECONDS ahead of the clock: the pause did not count as credit.
    assert flooded == math.ceil(MAX_LEAD_SECONDS), flooded
    transcriber.end()
    pool.shutdown()


async def test_a_step_waiting_for_a_slot_is_cancelled_with_the_session(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=4)
    held = await pool.acquire_slot()  # another request holds the only slot
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=1.0)
    worker = asyncio.create_task(collect(transcriber))
    transcriber.feed(pcm_of(AUDIO_DIR / "jfk.flac", end_seconds=2.0))
    await eventually(lambda: pool.waiting == 1, what="a step waiting for the slot")
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert pool.waiting == 0
    released: list[bool] = []
    transcriber.after_current_step(lambda: released.append(True))
    assert released == [True], "nothing ran, so the model lease may go at once"
    held.finish()
    await asyncio.sleep(0.1)
    assert (pool.running, transcriber.steps) == (0, 0)
    pool.shutdown()


async def test_a_full_queue_makes_the_step_wait_instead_of_failing(model: WhisperModel) -> None:
    pool = InferencePool(concurrency=1, max_queued=0)  # any job that finds the slot taken is refused
    held = await pool.acquire_slot()
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=1.0)
    worker = asyncio.create_task(collect(transcriber))
    transcriber.feed(pcm_of(AUDIO_DIR / "jfk.flac"))
    transcriber.end()
    await asyncio.sleep(1.0)  # several refusals and retries
    assert not worker.done()
    held.finish()
    async with asyncio.timeout(60):
        await worker
    assert word_error_rate(JFK_TEXT, transcriber.text) <= 0.1
    pool.shutdown()


async def feed_as_fast_as_allowed(transcriber: LiveTranscriber, pcm: bytes, frame_bytes: int = FRAME) -> None:
    """What the connection's receive loop does with a client that sends faster than real time."""
    for offset in range(0, len(pcm), frame_bytes):
        await transcriber.wait_for_room()
        transcriber.feed(pcm[offset : offset + frame_bytes])
        await asyncio.sleep(0)
    transcriber.end()


async def transcribe_flood(model: WhisperModel, pcm: bytes) -> tuple[LiveTranscriber, float]:
    """The whole of `pcm` through one transcriber, fed as fast as it allows; returns it and its longest buffer."""
    pool = InferencePool(concurrency=1, max_queued=4)
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=1.0)
    feeder = asyncio.create_task(feed_as_fast_as_allowed(transcriber, pcm))
    longest = 0
    async for _ in transcriber.updates():
        longest = max(longest, len(transcriber.buffer))
    await feeder
    pool.shutdown()
    return transcriber, longest / SAMPLE_RATE


async def test_a_repetitive_recording_loses_no_sentence(model: WhisperModel) -> None:
    # jfk without pauses, as in the recording that once lost a whole sentence (Whisper's temperature fallback
    # took 17 s on one step of this repetitive text, and the buffer was then cut before it was confirmed).
    repeats = 10
    script = programme(recordings()[:1], seconds=repeats * 11.0, pauses=(0.0, 0.0))
    transcriber, longest = await transcribe_flood(model, script.pcm())
    assert missing_sentences(script.script, transcriber.text) == []
    assert word_error_rate(" ".join(script.script), transcriber.text) <= 0.05
    assert longest <= MAX_STEP_SECONDS + FRAME / 2 / SAMPLE_RATE


@pytest.mark.long
@pytest.mark.timeout(5400)
async def test_an_hour_of_varied_speech_streamed_faster_than_real_time_loses_no_sentence(model: WhisperModel) -> None:
    # 60 sentences of the piper voice and the three shared recordings, in a new order each round, with pauses.
    pool = [*spoken(scripted_sentences(60)), *recordings()]
    script = programme(pool, seconds=3600.0, seed=1)
    transcriber, longest = await transcribe_flood(model, script.pcm())
    missing = missing_sentences(script.script, transcriber.text)
    assert missing == [], f"{len(missing)} of {len(script.script)} sentences missing: {missing[:5]}"
    assert word_error_rate(" ".join(script.script), transcriber.text) <= 0.1
    assert longest <= MAX_STEP_SECONDS + FRAME / 2 / SAMPLE_RATE


@pytest.mark.parametrize(("content_windows", "chunk_seconds"), [("off", 0.5), ("live", 1.3)])
async def test_steps_replayed_chunk_by_chunk_confirm_no_loop_and_lose_no_clause(
    content_windows: str, chunk_seconds: float
) -> None:
    """The realtime benchmark's audio (the licence reading, jfk, the lamp clip, half a second apart), each
    chunk transcribed before the next arrives, so the steps are the same on every run of one host.

    A guard against the gross failures, with bounds loose enough for other CPUs' numerics: no wordless
    "word" confirmed (one build confirmed 36 dots after jfk's "for you." here, full windows at 0.5 s chunks,
    WER 0.159), no clause lost. The finer faults the replay found (a cut through "software", a stretched
    "not" hiding "what"; WER 0.088 on this host before, 0.018-0.044 after) are pinned by the unit tests in
    test_local_agreement.py and test_live_units.py, whose outcome does not depend on the model."""
    settings = Settings(whisper={"content_windows": content_windows})
    model = load_whisper_model(ModelRef(Kind.STT, TINY_EN), settings).model
    speech = licence_jfk_lamp()
    audio = float_to_pcm(speech.samples)
    pool = InferencePool(concurrency=1, max_queued=4)
    transcriber = LiveTranscriber(model, pool, language="en", min_chunk_seconds=min(1.0, chunk_seconds))
    worker = asyncio.create_task(collect(transcriber))
    chunk = 2 * round(chunk_seconds * SAMPLE_RATE)
    for offset in range(0, len(audio), chunk):
        transcriber.feed(audio[offset : offset + chunk])
        if offset + chunk < len(audio):  # the last, shorter chunk is taken by the step at the end
            await caught_up(transcriber)
    transcriber.end()
    updates = await worker
    pool.shutdown()
    model.model.unload_model()
    words = [word.word for update in updates for word in update.words]
    assert all(normalize_word(word) for word in words), [word for word in words if not normalize_word(word)]
    clauses = re.split(r"[.,;]", speech.text)
    # Clauses of three words and more: a lone "sublicense" is spelt "sublicence" by tiny.en.
    assert missing_sentences([clause for clause in clauses if len(clause.split()) >= 3], transcriber.text) == []
    assert word_error_rate(speech.text, transcriber.text) <= 0.1, transcriber.text
