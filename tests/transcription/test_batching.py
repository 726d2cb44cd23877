"""Cross-request batching, in process, with the real bundled models.

Concurrent transcriptions through one batching model give what each gives alone; which CTranslate2 calls
share a batch; cancellation; a failing call's companions; a lone call never waiting. Where a test must know
that calls wait together, `Gate` holds the model's generate calls until the test opens it: the results still
come from the real model, the gate only decides when.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer

from speaches import metrics
from speaches.audio.decoding import decode_audio
from speaches.config import Settings
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.batching import ACTIVE_SECONDS, BatchCancelledError, BatchingWhisper, bind_cancel_token
from speaches.transcription.whisper import load_whisper_model
from tests.helpers import AUDIO_DIR, BASE, JFK_TEXT, TINY_EN, word_error_rate

WAIT_MS = 1000
"""Long, so that a test can tell a batch that waited for a companion from one that did not."""


def load(model_id: str, *, max_batch_size: int = 8) -> WhisperModel:
    settings = Settings(whisper={"max_batch_size": max_batch_size, "batch_wait_ms": WAIT_MS})
    model: WhisperModel = load_whisper_model(ModelRef(Kind.STT, model_id), settings).model
    return model


@pytest.fixture(scope="module")
def tiny() -> WhisperModel:
    return load(TINY_EN)


@pytest.fixture(scope="module")
def tiny_plain() -> WhisperModel:
    """Without batching: CTranslate2 as faster-whisper uses it."""
    model = load(TINY_EN, max_batch_size=1)
    assert not isinstance(model.model, BatchingWhisper)
    return model


@pytest.fixture(scope="module")
def audio() -> dict[str, np.ndarray]:
    return {
        "jfk": decode_audio(AUDIO_DIR / "jfk.flac"),
        "lamp": decode_audio(AUDIO_DIR / "turn_on_the_living_room_lamp.wav"),
        "licence": decode_audio(AUDIO_DIR / "multilingual.mp3")[: 30 * 16_000],
        "german": decode_audio(AUDIO_DIR / "living_room_light_de.wav"),
        "french": decode_audio(AUDIO_DIR / "whats_your_name_french.wav"),
    }


def queue_of(model: WhisperModel) -> BatchingWhisper:
    assert isinstance(model.model, BatchingWhisper)
    return model.model


def concurrently(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs in threads started together; their results in order (an exception is re-raised)."""
    start = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = jobs[index]()
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def transcribe(model: WhisperModel, audio: np.ndarray, **options: Any) -> tuple[str, list[Any]]:
    segments, _info = model.transcribe(audio, **options)
    kept = list(segments)
    return "".join(segment.text for segment in kept), kept


def assert_same(alone: tuple[str, list[Any]], batched: tuple[str, list[Any]]) -> None:
    assert batched[0] == alone[0]
    assert word_error_rate(alone[0], batched[0]) <= 0.01
    assert [(s.start, s.end) for s in batched[1]] == [(s.start, s.end) for s in alone[1]]
    for segment, reference in zip(batched[1], alone[1], strict=True):
        assert segment.avg_logprob == pytest.approx(reference.avg_logprob, abs=1e-6)
        if reference.words is not None:
            assert [w.word for w in segment.words] == [w.word for w in reference.words]
            # Alignment over padded text may move a word boundary by a frame (20 ms).
            for word, expected in zip(segment.words, reference.words, strict=True):
                assert word.start == pytest.approx(expected.start, abs=0.05)
                assert word.end == pytest.approx(expected.end, abs=0.05)


def test_concurrent_transcriptions_equal_each_alone_without_batching(
    tiny: WhisperModel, tiny_plain: WhisperModel, audio: dict[str, np.ndarray]
) -> None:
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("jfk", {}),
        ("jfk", {"word_timestamps": True}),
        ("lamp", {"word_timestamps": True}),
        ("lamp", {"initial_prompt": "Turn it on."}),
        ("licence", {"temperature": 0.0, "beam_size": 1}),
    ]
    alone = [transcribe(tiny_plain, audio[name], **options) for name, options in jobs]
    queue = queue_of(tiny)
    before = Counter(queue.batch_sizes)
    batched = concurrently([lambda n=name, o=options: transcribe(tiny, audio[n], **o) for name, options in jobs])
    for reference, result in zip(alone, batched, strict=True):
        assert_same(reference, result)
    ran = queue.batch_sizes - before
    # Whether the two word-timestamp jobs' alignments coincide depends on this host's speed; the gated test
    # `test_word_alignments_share_a_batch` shows that they merge when they do.
    assert any(windows > 1 for call, windows in ran if call == "generate"), ran


def test_languages_and_tasks_share_batches_with_the_multilingual_model(audio: dict[str, np.ndarray]) -> None:
    base = load(BASE)
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("german", {}),  # detected
        ("french", {"task": "translate"}),
        ("jfk", {"language": "en"}),
        ("french", {"language": "fr"}),
    ]
    # Alone, every call runs as it was made: the reference.
    alone = [transcribe(base, audio[name], **options) for name, options in jobs]
    assert word_error_rate("How do you call yourself?", alone[1][0]) <= 0.25
    queue = queue_of(base)
    before = Counter(queue.batch_sizes)
    batched = concurrently([lambda n=name, o=options: transcribe(base, audio[n], **o) for name, options in jobs])
    for reference, result in zip(alone, batched, strict=True):
        assert_same(reference, result)
    ran = queue.batch_sizes - before
    assert any(windows > 1 for call, windows in ran if call in ("generate", "detect_language")), ran


# --- which calls share a batch, cancellation, failures: the gate decides when a batch in flight ends ---


class Gate:
    """The real CTranslate2 model; every generate waits for a permit the test gives."""

    num_workers = 1
    """One replica, whatever the machine's layout: a blocked call holds the whole model, so the rest queue."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.entered = threading.Semaphore(0)
        self.permits = threading.Semaphore(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def generate(self, *args: Any, **options: Any) -> Any:
        self.entered.release()
        assert self.permits.acquire(timeout=120), "the test never let this call through"
        return self.model.generate(*args, **options)


class Job:
    """One job's thread (a context of its own, as a pool step has); `result` re-raises its error."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(work,))
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._outcome.append((work(), None))
        except Exception as error:
            self._outcome.append((None, error))

    def result(self, timeout: float = 120) -> Any:
        self._thread.join(timeout)
        assert self._outcome, "the job did not finish"
        value, error = self._outcome[0]
        if error is not None:
            raise error
        return value


class GatedQueue:
    """A batching queue in front of the gated real model; a blocking call holds it busy from the start."""

    def __init__(self, whisper: WhisperModel, encoded: dict[str, Any], *, wait_seconds: float = 0.0) -> None:
        self.raw = whisper.model
        self.gate = Gate(self.raw)
        tokenizer = whisper.hf_tokenizer
        self.sot = tokenizer.token_to_id("<|startoftranscript|>")
        self.queue = BatchingWhisper(
            self.gate,
            max_batch_size=8,
            wait_seconds=wait_seconds,
            sot_id=self.sot,
            no_timestamps_id=tokenizer.token_to_id("<|notimestamps|>"),
            merge_encodes=False,
        )
        self.encoded = encoded
        self.blocker = Job(lambda: self.queue.generate(encoded["lamp"], [[self.sot]], **GREEDY))
        self.wait_in_flight()

    def submit(self, work: Callable[[BatchingWhisper], Any]) -> Job:
        return Job(lambda: work(self.queue))

    def wait_queued(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while self.queue.queued < count:
            assert time.monotonic() < deadline, "the calls never queued"
            time.sleep(0.01)

    def wait_in_flight(self) -> None:
        assert self.gate.entered.acquire(timeout=60), "no batch started"

    def release(self, batches: int = 1) -> None:
        self.gate.permits.release(batches)

    def generate_batches(self) -> list[int]:
        """Windows in each generate batch after the blocker's, in order of size."""
        sizes = sorted(w for (call, w), n in self.queue.batch_sizes.items() if call == "generate" for _ in range(n))
        sizes.remove(1)
        return sizes


GREEDY = {"beam_size": 1, "return_scores": True}
BEAM = {"beam_size": 5, "return_scores": True}


@pytest.fixture(scope="module")
def encoded(tiny_plain: WhisperModel, audio: dict[str, np.ndarray]) -> dict[str, Any]:
    def encode(samples: np.ndarray) -> Any:
        return tiny_plain.encode(pad_or_trim(tiny_plain.feature_extractor(samples)[..., :-1]))

    return {"jfk": encode(audio["jfk"]), "lamp": encode(audio["lamp"])}


@pytest.fixture
def gated(tiny_plain: WhisperModel, encoded: dict[str, Any]) -> Iterator[GatedQueue]:
    queue = GatedQueue(tiny_plain, encoded)
    yield queue
    queue.release(100)
    queue.blocker.result()


def same_result(got: Any, expected: Any) -> bool:
    return bool(got.sequences_ids == expected.sequences_ids and got.scores == expected.scores)


@pytest.mark.parametrize(
    ("first", "second", "merged"),
    [
        (GREEDY, GREEDY, True),
        (GREEDY, BEAM, False),
        # Greedy calls merge across length limits: one that reaches its own limit is decoded again alone.
        (GREEDY, {**GREEDY, "max_length": 12}, True),
        (BEAM, {**BEAM, "max_length": 12}, False),
        (GREEDY, {**GREEDY, "sampling_topk": 0, "sampling_temperature": 0.5}, False),
        (BEAM, {**BEAM, "return_no_speech_prob": True}, False),
    ],
)
def test_which_options_share_a_batch(
    gated: GatedQueue, first: dict[str, Any], second: dict[str, Any], merged: bool
) -> None:
    prompt = [gated.sot]
    jfk = gated.submit(lambda q: q.generate(gated.encoded["jfk"], [prompt], **first))
    lamp = gated.submit(lambda q: q.generate(gated.encoded["lamp"], [prompt], **second))
    gated.wait_queued(2)
    gated.release(100)
    jfk_result, lamp_result = jfk.result()[0], lamp.result()[0]
    assert gated.generate_batches() == ([2] if merged else [1, 1])
    assert same_result(jfk_result, gated.raw.generate(gated.encoded["jfk"], [prompt], **first)[0])
    if "sampling_topk" not in second:  # sampling is random: only the greedy and beam results repeat
        assert same_result(lamp_result, gated.raw.generate(gated.encoded["lamp"], [prompt], **second)[0])
    if "max_length" in second:
        assert len(lamp_result.sequences_ids[0]) <= 6  # cut at its own limit, as alone


def test_prompts_share_a_batch_when_their_previous_text_is_as_long(gated: GatedQueue, tiny_plain: WhisperModel) -> None:
    tokenizer = Tokenizer(tiny_plain.hf_tokenizer, False, task="transcribe", language="en")

    def prompt(previous: str) -> list[int]:
        return [tokenizer.sot_prev, *tokenizer.encode(previous), gated.sot]

    prompts = [prompt(" Hello there."), prompt(" Goodbye now."), prompt(" A longer previous text than that.")]
    assert len(prompts[0]) == len(prompts[1]) < len(prompts[2])
    jobs = [gated.submit(lambda q, p=p: q.generate(gated.encoded["jfk"], [p], **BEAM)) for p in prompts]
    gated.wait_queued(3)
    gated.release(100)
    results = [job.result()[0] for job in jobs]
    assert gated.generate_batches() == [1, 2]
    for result, used in zip(results, prompts, strict=True):
        assert same_result(result, gated.raw.generate(gated.encoded["jfk"], [used], **BEAM)[0])


def test_word_alignments_share_a_batch(
    gated: GatedQueue, tiny_plain: WhisperModel, audio: dict[str, np.ndarray]
) -> None:
    tokenizer = Tokenizer(tiny_plain.hf_tokenizer, False, task="transcribe", language="en")
    start = list(tokenizer.sot_sequence)
    texts = {"jfk": tokenizer.encode(" " + JFK_TEXT), "lamp": tokenizer.encode(" Turn on the living room lamp.")}
    frames = {name: len(audio[name]) // tiny_plain.feature_extractor.hop_length for name in texts}
    jobs = {
        name: gated.submit(lambda q, n=name, t=tokens: q.align(gated.encoded[n], start, [t], frames[n]))
        for name, tokens in texts.items()
    }
    gated.wait_queued(2)
    gated.release(100)
    results = {name: job.result()[0] for name, job in jobs.items()}
    assert gated.queue.batch_sizes[("align", 2)] == 1, gated.queue.batch_sizes

    def first_frames(result: Any) -> dict[int, int]:
        """The frame where each text token begins: what word timestamps are read from."""
        firsts: dict[int, int] = {}
        for text_index, time_index in result.alignments:
            firsts.setdefault(text_index, time_index)
        return firsts

    for name, tokens in texts.items():
        alone = gated.raw.align(gated.encoded[name], start, [tokens], frames[name])[0]
        assert len(results[name].text_token_probs) == len(alone.text_token_probs) == len(tokens)
        merged, reference = first_frames(results[name]), first_frames(alone)
        assert merged.keys() == reference.keys()
        # Over padded text a boundary may move by a frame (see batch_calls.py).
        moved = [(index, merged[index], reference[index]) for index in reference if merged[index] != reference[index]]
        assert all(abs(got - expected) <= 1 for _index, got, expected in moved), (name, moved)


def test_a_failing_call_does_not_fail_its_companions(gated: GatedQueue) -> None:
    prompt = [gated.sot]
    good = gated.submit(lambda q: q.generate(gated.encoded["jfk"], [prompt], **GREEDY))
    # max_length 1 leaves CTranslate2 no step to decode: it refuses the call (when it runs alone).
    bad = gated.submit(lambda q: q.generate(gated.encoded["lamp"], [prompt], **{**GREEDY, "max_length": 1}))
    gated.wait_queued(2)
    gated.release(100)
    assert same_result(good.result()[0], gated.raw.generate(gated.encoded["jfk"], [prompt], **GREEDY)[0])
    with pytest.raises(ValueError, match="decoding length"):
        bad.result()
    assert gated.generate_batches() == [2]


def test_a_leaving_job_takes_its_queued_call_out_at_once(gated: GatedQueue) -> None:
    prompt = [gated.sot]
    withdrawn = metrics.WHISPER_BATCH_WITHDRAWN.labels("generate")
    withdrawn_before = withdrawn._value.get()
    tokens: list[Any] = []

    def leaving(queue: BatchingWhisper) -> Any:
        tokens.append(bind_cancel_token())
        return queue.generate(gated.encoded["jfk"], [prompt], **GREEDY)

    left = gated.submit(leaving)
    staying = gated.submit(lambda q: q.generate(gated.encoded["lamp"], [prompt], **GREEDY))
    gated.wait_queued(2)
    tokens[0].cancel()
    # Out while the batch ahead of it is still in flight: it waits for nothing.
    with pytest.raises(BatchCancelledError):
        left.result()
    assert gated.queue.queued == 1
    assert withdrawn._value.get() == withdrawn_before + 1
    gated.release(100)
    assert same_result(staying.result()[0], gated.raw.generate(gated.encoded["lamp"], [prompt], **GREEDY)[0])
    assert gated.generate_batches() == [1]


def test_a_batch_in_flight_finishes_without_its_leaving_member(gated: GatedQueue) -> None:
    prompt = [gated.sot]
    tokens: list[Any] = []

    def leaving(queue: BatchingWhisper) -> Any:
        tokens.append(bind_cancel_token())
        result = queue.generate(gated.encoded["jfk"], [prompt], **GREEDY)
        with pytest.raises(BatchCancelledError):  # the job's next call is refused before it queues
            queue.generate(gated.encoded["jfk"], [prompt], **GREEDY)
        return result

    left = gated.submit(leaving)
    staying = gated.submit(lambda q: q.generate(gated.encoded["lamp"], [prompt], **GREEDY))
    gated.wait_queued(2)
    gated.release()  # the blocker ends; the two start as one batch
    gated.wait_in_flight()
    tokens[0].cancel()
    gated.release()
    assert same_result(staying.result()[0], gated.raw.generate(gated.encoded["lamp"], [prompt], **GREEDY)[0])
    assert same_result(left.result()[0], gated.raw.generate(gated.encoded["jfk"], [prompt], **GREEDY)[0])
    assert gated.generate_batches() == [2]


# --- waiting for companions ---


def test_a_lone_job_never_waits(tiny: WhisperModel, audio: dict[str, np.ndarray]) -> None:
    queue = queue_of(tiny)
    time.sleep(ACTIVE_SECONDS)  # no other job has used the model a moment ago
    queue.longest_wait = 0.0
    text, _segments = transcribe(tiny, audio["jfk"], word_timestamps=True)
    assert word_error_rate(JFK_TEXT, text) <= 0.05
    # A wait for a companion would last until the others' activity expires (ACTIVE_SECONDS).
    assert queue.longest_wait < ACTIVE_SECONDS / 2


def test_a_batch_waits_for_a_job_that_just_used_the_model(tiny: WhisperModel, encoded: dict[str, Any]) -> None:
    queue = queue_of(tiny)
    prompt = [tiny.hf_tokenizer.token_to_id("<|startoftranscript|>")]
    before = Counter(queue.batch_sizes)
    first_done = threading.Event()

    def first() -> Any:
        tiny.encode(np.zeros((80, 3000), dtype=np.float32))
        first_done.set()
        deadline = time.monotonic() + 30
        while queue.queued < 1:  # the second job's call is waiting for it
            assert time.monotonic() < deadline
            time.sleep(0.005)
        return queue.generate(encoded["jfk"], [prompt], **GREEDY)

    def second() -> Any:
        assert first_done.wait(30)
        return queue.generate(encoded["lamp"], [prompt], **GREEDY)

    results = concurrently([first, second])
    ran = queue.batch_sizes - before
    assert ran[("generate", 2)] == 1, ran
    assert same_result(results[1][0], tiny.model.wrapped.generate(encoded["lamp"], [prompt], **GREEDY)[0])


def test_a_waiting_batch_lets_a_call_that_cannot_join_go_first(
    tiny_plain: WhisperModel, encoded: dict[str, Any]
) -> None:
    """A greedy call waits for a job whose other call (a beam search) is queued behind it: that call goes ahead
    on the free replica, and the job's greedy call then joins the waiting one in a single batch."""
    gated = GatedQueue(tiny_plain, encoded, wait_seconds=WAIT_MS / 1000)
    queue, sot = gated.queue, gated.sot
    waiting = gated.submit(lambda q: q.generate(encoded["jfk"], [[sot]], **GREEDY))
    gated.wait_queued(1)
    order: list[str] = []

    def companion(q: BatchingWhisper) -> Any:
        q.generate(encoded["lamp"], [[sot]], **BEAM)
        order.append("beam")
        return q.generate(encoded["lamp"], [[sot]], **GREEDY)

    other = gated.submit(companion)
    gated.wait_queued(2)
    gated.release(3)  # the blocker, the beam search, and one merged greedy batch
    gated.blocker.result()
    greedy_jfk, greedy_lamp = waiting.result(), other.result()
    assert order == ["beam"]
    assert queue.batch_sizes[("generate", 2)] == 1, queue.batch_sizes
    assert same_result(greedy_jfk[0], tiny_plain.model.generate(encoded["jfk"], [[sot]], **GREEDY)[0])
    assert same_result(greedy_lamp[0], tiny_plain.model.generate(encoded["lamp"], [[sot]], **GREEDY)[0])
