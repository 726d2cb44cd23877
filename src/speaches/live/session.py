"""A live transcription session: the audio buffer and the loop that turns it into confirmed text.

The client streams raw PCM (16 kHz, mono, 16-bit little-endian) in frames of any size. `LiveTranscriber`
appends each frame to a `PcmBuffer` and, whenever at least `min_chunk_seconds` of new audio has arrived,
transcribes the whole unconfirmed buffer once more; `LocalAgreement` confirms the words on which two
consecutive transcriptions agree, and tells where the buffer may be cut (after a confirmed sentence).

What keeps a session of hours bounded:

- memory: the buffer holds only unconfirmed audio (cut at sentence ends, and in any case kept under
  `MAX_BUFFER_SECONDS`), and each frame is converted from int16 once, into a preallocated array;
- CPU: one transcription runs at a time per session, each in one slot of the shared inference pool. Frames
  keep arriving while it runs; the next transcription takes all of them at once. A session that falls
  behind therefore transcribes bigger, newer steps instead of queueing one step per frame.

Nothing here knows about WebSockets: the router feeds bytes in and publishes the updates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from speaches.inference import InferencePool
from speaches.live.local_agreement import Confirmation, LocalAgreement

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Word

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""What the client sends and Whisper hears: 16 kHz mono."""
BYTES_PER_SAMPLE = 2
MAX_BUFFER_SECONDS = 15.0
"""A buffer longer than this with no confirmed sentence end is cut at the last confirmed word.

Half Whisper's 30 s window, as in the paper's implementation: near the window's end tiny.en was seen to skip
a clause in one hypothesis and stretch the neighbouring word over it, and the confirmed word's stretched end
then hid the clause from every later hypothesis. Shorter buffers also make each step cheaper.
"""
SILENCE_KEEP_SECONDS = 2.0
"""When Whisper hears no word at all in the buffer, all but this much of its end is dropped (speech may be starting)."""
PROMPT_CHARS = 200
"""How much of the confirmed text before the buffer is given to Whisper as its prompt."""
BEAM_SIZE = 1
"""Greedy decoding: on CPU it halves each step's time against beam 5, which buys more latency than it costs WER."""


class PcmBuffer:
    """The session's unconfirmed audio as float32 samples, fed with int16 little-endian PCM frames.

    Positions are absolute sample indexes on the session's timeline (sample 0 is the first one received):
    the buffer holds samples `start` to `end`. Each frame is converted once, straight into a preallocated
    array; `trim_to` only moves `start`. When the array is full, the live samples move into a new array
    twice their size, so appending costs amortised O(frame) and the array stays within twice the live audio.

    `samples()` returns the live samples without a copy. The view never changes afterwards, even while more
    frames arrive: appends write only past its end, and growing allocates a new array rather than moving
    samples inside the old one (which the view keeps alive). So a worker thread may read it while the event
    loop keeps appending.
    """

    def __init__(self, initial_seconds: float = MAX_BUFFER_SECONDS + 2.0) -> None:
        self._initial_capacity = round(initial_seconds * SAMPLE_RATE)
        self._array = np.empty(self._initial_capacity, dtype=np.float32)
        self._head = 0  # array index of the sample at `start`
        self._tail = 0  # array index just past the newest sample
        self._start = 0
        # A frame may end in the middle of a sample; its first byte waits here for the next frame.
        self._odd_byte = b""

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample still buffered."""
        return self._start

    @property
    def end(self) -> int:
        """Absolute index just past the newest sample: every whole sample received so far."""
        return self._start + (self._tail - self._head)

    def __len__(self) -> int:
        return self._tail - self._head

    @property
    def capacity(self) -> int:
        return len(self._array)

    def append(self, pcm: bytes) -> None:
        """Add a frame of int16 little-endian samples; an odd trailing byte is kept for the next frame."""
        if self._odd_byte:
            pcm = self._odd_byte + pcm
        whole = len(pcm) - len(pcm) % BYTES_PER_SAMPLE
        self._odd_byte = pcm[whole:]
        if whole == 0:
            return
        incoming = np.frombuffer(pcm, dtype="<i2", count=whole // BYTES_PER_SAMPLE)
        self._reserve(len(incoming))
        target = self._array[self._tail : self._tail + len(incoming)]
        target[:] = incoming
        target *= 1.0 / 32768.0
        self._tail += len(incoming)

    def samples(self) -> np.ndarray:
        """The buffered samples, read-only and stable (see the class docstring)."""
        view = self._array[self._head : self._tail]
        view.flags.writeable = False
        return view

    def trim_to(self, position: int) -> None:
        """Drop every sample before absolute index `position` (clamped to what is buffered)."""
        drop = min(max(position - self._start, 0), len(self))
        self._head += drop
        self._start += drop

    def _reserve(self, count: int) -> None:
        if self._tail + count <= len(self._array):
            return
        live = len(self)
        grown = np.empty(max(self._initial_capacity, 2 * (live + count)), dtype=np.float32)
        grown[:live] = self._array[self._head : self._tail]
        self._array = grown
        self._head = 0
        self._tail = live


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """One transcription of the buffer: its words (timed from the buffer's start) and language."""

    words: list[Word]
    language: str


def transcribe_buffer(model: WhisperModel, audio: np.ndarray, language: str | None, prompt: str) -> Hypothesis:
    """Transcribe the buffer once, with word timestamps (blocking: run it in the inference pool).

    `condition_on_previous_text=False` because the buffer's own earlier windows are re-heard every step; the
    confirmed text before the buffer comes in as `initial_prompt` instead. The VAD filter keeps Whisper from
    inventing words in silence and skips silent stretches cheaply; word times are mapped back onto the
    buffer by faster-whisper.
    """
    segments, info = model.transcribe(
        audio,
        language=language,
        initial_prompt=prompt or None,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=True,
        beam_size=BEAM_SIZE,
    )
    words = [word for segment in segments for word in segment.words or ()]
    return Hypothesis(words=words, language=info.language)


@dataclass(frozen=True, slots=True)
class LiveUpdate:
    """What one step changed, and where the transcript stands."""

    delta: str
    """The newly confirmed text: `text` is the previous `text` plus `delta` (may begin with a space)."""
    text: str
    """Everything confirmed so far; only ever grows."""
    unconfirmed: str
    """The tentative tail after `text` (reads on from it, so it may begin with a space); may still change."""
    words: tuple[Word, ...]
    """The newly confirmed words, timed in seconds from the start of the session's audio."""
    language: str | None


Publish = Callable[[LiveUpdate], Awaitable[None]]


class LiveTranscriber:
    """Feed PCM frames in with `feed`, call `end` after the last one; `run` publishes updates until done.

    `feed` and `end` are called from the receive loop, `run` is the session's one worker task; both on the
    event loop, so they share state without locks. Cancelling `run` stops the session at once: a step in
    flight finishes in its pool thread (and then frees its slot), but nothing new starts.
    """

    def __init__(
        self,
        model: WhisperModel,
        pool: InferencePool,
        publish: Publish,
        *,
        language: str | None,
        min_chunk_seconds: float,
        max_buffer_seconds: float = MAX_BUFFER_SECONDS,
    ) -> None:
        self._model = model
        self._pool = pool
        self._publish = publish
        self._language = language
        self._language_fixed = language is not None
        self._min_chunk_samples = max(1, round(min_chunk_seconds * SAMPLE_RATE))
        self._max_buffer_seconds = max_buffer_seconds
        self._buffer = PcmBuffer()
        self._policy = LocalAgreement()
        self._transcribed_until = 0  # absolute sample index where the last step's audio ended
        self._work = asyncio.Event()  # set when enough new audio has arrived, or at the end
        self._ended = False
        self._stepping = False
        self._in_flight: asyncio.Future[Hypothesis] | None = None
        self._last_unconfirmed = ""
        self._heard_language: str | None = None  # what the latest step detected, while none is fixed

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def received_seconds(self) -> float:
        """Seconds of audio received so far (the session's timeline)."""
        return self._buffer.end / SAMPLE_RATE

    @property
    def buffer(self) -> PcmBuffer:
        return self._buffer

    @property
    def caught_up(self) -> bool:
        """Whether every sample received so far has been through a finished step (and the buffer cut after it)."""
        return not self._stepping and self._buffer.end == self._transcribed_until

    def after_current_step(self, callback: Callable[[], object]) -> None:
        """Call `callback` once no transcription step of this session is running any more (now, if none is).

        For releasing the model lease after the session was cancelled: the step in flight still uses the model
        in its pool thread until it finishes.
        """
        step = self._in_flight
        if step is None or step.done():
            callback()
        else:
            step.add_done_callback(lambda _step: callback())

    def feed(self, pcm: bytes) -> None:
        """Append a frame; wake the worker once `min_chunk_seconds` of audio is new since its last step."""
        if self._ended:
            raise RuntimeError("audio fed after the end of the stream")
        self._buffer.append(pcm)
        if self._buffer.end - self._transcribed_until >= self._min_chunk_samples:
            self._work.set()

    def end(self) -> None:
        """No more audio: `run` transcribes what is left, confirms the tentative tail and returns."""
        self._ended = True
        self._work.set()

    async def run(self) -> str:
        """Transcribe as audio arrives until `end`; returns the final transcript."""
        while True:
            await self._work.wait()
            self._work.clear()
            # Read before the step: audio fed before end() is already in the buffer, so one more step covers it.
            ending = self._ended
            if self._buffer.end > self._transcribed_until:
                self._stepping = True
                try:
                    await self._step()
                finally:
                    self._stepping = False
            if ending:
                break
        await self._publish_confirmation(self._policy.flush())
        return self._policy.confirmed_text

    async def _step(self) -> None:
        audio = self._buffer.samples()
        offset = self._buffer.start / SAMPLE_RATE
        self._transcribed_until = self._buffer.end
        prompt = self._policy.prompt(offset, max_chars=PROMPT_CHARS)
        # Shielded as a task of its own: when the session is cancelled the step still runs to its end in the
        # pool, and `after_current_step` knows when the model is no longer in use.
        step = asyncio.ensure_future(self._pool.run(transcribe_buffer, self._model, audio, self._language, prompt))
        step.add_done_callback(_retrieve_exception)
        self._in_flight = step
        hypothesis = await asyncio.shield(step)
        confirmation = self._policy.insert(hypothesis.words, offset)
        if not self._language_fixed and confirmation.words:
            # Detecting the language again on every short buffer lets it flip; the first one that
            # confirmed words is kept for the rest of the session.
            self._language = hypothesis.language
            self._language_fixed = True
        self._heard_language = hypothesis.language
        await self._publish_confirmation(confirmation)
        self._trim(heard_words=bool(hypothesis.words), heard_until=self._transcribed_until)

    async def _publish_confirmation(self, confirmation: Confirmation) -> None:
        unconfirmed = self._policy.unconfirmed_text
        if not confirmation.text and unconfirmed == self._last_unconfirmed:
            return
        self._last_unconfirmed = unconfirmed
        await self._publish(
            LiveUpdate(
                delta=confirmation.text,
                text=self._policy.confirmed_text,
                unconfirmed=unconfirmed,
                words=confirmation.words,
                language=self._language or self._heard_language,
            )
        )

    def _trim(self, *, heard_words: bool, heard_until: int) -> None:
        start = self._buffer.start / SAMPLE_RATE
        end = self._buffer.end / SAMPLE_RATE
        cut = self._policy.trim_point(start, end, self._max_buffer_seconds)
        if cut is None and not heard_words:
            # Silence (or noise Whisper makes nothing of): no need to hear it again, bar the very end.
            cut = heard_until / SAMPLE_RATE - SILENCE_KEEP_SECONDS
        elif cut is None and end - start > self._max_buffer_seconds:
            # Nothing confirmed in a whole window: Whisper keeps changing its mind about this audio (noise,
            # music). Memory stays bounded by dropping its older half.
            cut = end - self._max_buffer_seconds / 2
        if cut is not None and cut > start:
            self._buffer.trim_to(round(cut * SAMPLE_RATE))


def _retrieve_exception(future: asyncio.Future[Hypothesis]) -> None:
    # A step abandoned by a cancelled session may fail with nobody awaiting it; that is not worth a warning.
    if not future.cancelled():
        future.exception()
