"""A live transcription session: the audio buffer and the loop that turns it into confirmed text.

The client streams audio in frames of any size. `LiveTranscriber` appends each frame to a `PcmBuffer` and,
whenever at least `min_chunk_seconds` of new audio has arrived, transcribes the unconfirmed buffer once more;
`LocalAgreement` confirms the words on which two consecutive transcriptions agree, and tells where the buffer
may be cut (after a confirmed sentence).

What keeps a session of hours bounded, and what keeps it from losing speech:

- memory: the buffer holds only unconfirmed audio (cut at sentence ends, and kept under `MAX_BUFFER_SECONDS`
  of heard audio), plus what arrived since the last step. That last part is bounded by backpressure: the
  receive loop stops reading (`wait_for_room`) once the buffer holds as much as the next step may hear
  (`MAX_STEP_SECONDS`), so a client sending faster than real time is slowed to the pace of transcription
  instead of filling memory. Only a client that sends in real time (at most `MAX_LEAD_SECONDS` ahead of the
  clock) may go on past that while the server falls behind, up to `MAX_PENDING_SECONDS` waiting;
- CPU: one step runs at a time per session, each in one slot of the shared inference pool, on at most
  `MAX_STEP_SECONDS` of audio, greedy, with no temperature fallback and a bound on decoded tokens. Frames keep
  arriving while it runs; the next step takes them (up to that bound) at once, so a session that falls behind
  takes bigger steps instead of queueing one step per frame;
- speech: audio is only ever cut where its words are already in the transcript, or where Whisper heard no
  word at all. When Whisper will not agree with itself over a whole buffer, the older half's words from the
  latest transcription are confirmed as they stand before that audio goes (see `_trim`);
- the pool: a step waiting for a slot is cancelled with the session; a full queue makes a step wait and retry
  (audio keeps accumulating, bounded as above) rather than end the session.

Nothing here knows about WebSockets: the connection feeds audio in and sends on the updates the transcriber
yields.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from speaches.inference import InferencePool, PoolBusyError, Slot
from speaches.live.hearing import Hypothesis, LiveTask, transcribe_buffer
from speaches.live.local_agreement import Confirmation, LocalAgreement
from speaches.live.pcm_buffer import SAMPLE_RATE, PcmBuffer
from speaches.transcription.batching import cancel_with_current_task

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Word

logger = logging.getLogger(__name__)

__all__ = ["SAMPLE_RATE", "LiveTask", "LiveTranscriber", "LiveUpdate", "PcmBuffer", "transcribe_buffer"]

MAX_BUFFER_SECONDS = 15.0
"""Heard audio longer than this with no confirmed sentence end is cut at the last confirmed word.

Half Whisper's 30 s window, as in the paper's implementation: near the window's end tiny.en was seen to skip
a clause in one hypothesis and stretch the neighbouring word over it, and the confirmed word's stretched end
then hid the clause from every later hypothesis. Shorter buffers also make each step cheaper.
"""
MAX_PENDING_SECONDS = 60.0
"""Audio received but not yet taken by a step, past which even a real-time client is no longer read.

A minute: a client sending in real time rides out a minute of full inference queue without being held back.
Holding a client back for long has a cost beyond its own latency: while the server reads nothing, it also
answers none of the client's keepalive pings, and WebSocket clients close the connection after some 20-40 s
without an answer. A client that floods audio gets no such allowance (see `MAX_LEAD_SECONDS`): it is read
only as fast as it is transcribed, one step's audio at a time.
"""
MAX_LEAD_SECONDS = 3.0
"""How far the received audio may run ahead of the wall clock (since the session began, not counting pauses in
sending) for the client to count as real-time: room for network jitter and clients that send a second or two
at a time. A client further ahead is sending a recording faster than real time, and is held to one step's
audio, so its buffer stays within `MAX_STEP_SECONDS` (a 74 s buffer was measured with the minute's allowance)."""
STEP_NEW_SECONDS = 5.0
MAX_STEP_SECONDS = MAX_BUFFER_SECONDS + STEP_NEW_SECONDS
"""The most audio one step transcribes: at most `STEP_NEW_SECONDS` beyond the unconfirmed buffer, within one
30 s Whisper window, whatever the client's frame size or how much audio is waiting.

Small steps when audio floods in, because confirming takes two transcriptions that both heard a word: a step
that took 10 s of new audio left more unconfirmed than the buffer may hold, so half of every flooded step's
words went in on one transcription's say (the forced path in `_trim`), and near a 25 s window's end Whisper
was seen to stop early and skip 8 s of speech.
"""
FORCED_CUT_MARGIN_SECONDS = 0.3
SILENCE_KEEP_SECONDS = 2.0
"""When Whisper hears no word at all in the buffer, all but this much of its end is dropped (speech may be starting)."""
PROMPT_CHARS = 200
"""How much of the text before the buffer is given to Whisper as its prompt."""
BUSY_RETRY_SECONDS = (0.25, 2.0)
"""First and longest wait before a step that found the pool queue full tries again."""
INVENTED_WORD_PROBABILITY = 0.15
INVENTED_WORD_SECONDS = 0.133
"""A word Whisper gives less than this probability and less than this duration (faster-whisper's own measures
of an anomalous word), among the last two of a hypothesis that ends in silence, is taken for its invention: on
jfk, a step that heard 250 ms into his last pause wrote "country. Thank you." with "Thank" at p 0.03 and no
duration. It is not confirmed on that step's say at a pause, and dropped with what follows at the end of a turn or
of the stream."""


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


class LiveTranscriber:
    """Feed audio in with `feed`, call `end` after the last frame; iterate `updates()` for what changes.

    `feed`, `wait_for_room` and `end` are called from the receive loop, `updates()` is iterated by the
    session's one worker task; both on the event loop, so they share state without locks. Cancelling that
    task stops the session at once: a step waiting for a pool slot leaves the queue, a step in flight finishes
    in its pool thread (and then frees its slot), and nothing new starts.
    """

    def __init__(
        self,
        model: WhisperModel,
        pool: InferencePool,
        *,
        language: str | None,
        min_chunk_seconds: float,
        task: LiveTask = "transcribe",
        context: str = "",
        max_buffer_seconds: float = MAX_BUFFER_SECONDS,
        max_pending_seconds: float = MAX_PENDING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`context`: text that comes before this audio (a client's prompt, the previous turn), prompted with.
        `clock`: seconds, for how far the client runs ahead of real time (tests pass their own)."""
        self._model = model
        self._pool = pool
        self._task: LiveTask = task
        self._context = context.strip()
        self._language = language
        self._language_fixed = language is not None
        self._min_chunk_samples = max(1, round(min_chunk_seconds * SAMPLE_RATE))
        self._max_buffer_seconds = max_buffer_seconds
        # At least two chunks may wait, or the receive loop would stall before a step is due.
        self._max_pending_samples = max(round(max_pending_seconds * SAMPLE_RATE), 2 * self._min_chunk_samples)
        self._step_new_samples = max(round(STEP_NEW_SECONDS * SAMPLE_RATE), 2 * self._min_chunk_samples)
        self._max_step_samples = round(max_buffer_seconds * SAMPLE_RATE) + self._step_new_samples
        self._buffer = PcmBuffer()
        self._clock = clock
        self._lead = 0.0  # seconds of audio ahead of the clock, as of `_lead_at`
        self._lead_at = clock()
        self._held_since: float | None = None  # when `wait_for_room` began holding the client back
        self._policy = LocalAgreement()
        self._transcribed_until = 0  # absolute sample index where the last step's audio ended
        self._work = asyncio.Event()  # set when enough new audio has arrived, or at the end
        self._room = asyncio.Event()  # set when a step takes the pending audio (or the transcriber stops)
        self._ended = False
        self._speech_until: int | None = None
        self._pause: tuple[int, int] | None = None  # (where the speech paused, how far a step must hear)
        self._stopped = False
        self._stepping = False
        self._steps = 0
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
    def text(self) -> str:
        """Everything confirmed so far; the whole transcript once `updates()` is exhausted."""
        return self._policy.confirmed_text

    @property
    def unconfirmed_text(self) -> str:
        return self._policy.unconfirmed_text

    @property
    def language(self) -> str | None:
        return self._language or self._heard_language

    @property
    def steps(self) -> int:
        """Transcription steps run so far."""
        return self._steps

    @property
    def buffer(self) -> PcmBuffer:
        return self._buffer

    @property
    def caught_up(self) -> bool:
        """Whether every sample received so far has been through a finished step (and the buffer cut after it)."""
        return not self._stepping and self._buffer.end == self._transcribed_until

    @property
    def lead_seconds(self) -> float:
        """How far the audio received runs ahead of real time: near 0 for a client sending in real time (it
        never goes below 0, so pauses in sending earn no credit), growing for one that sends faster. The
        clock stands still while the client is held back (`wait_for_room`): that time says nothing of its rate.
        """
        now = self._clock() if self._held_since is None else self._held_since
        return max(0.0, self._lead - (now - self._lead_at))

    @property
    def has_room(self) -> bool:
        """Whether more audio may be received now (see `wait_for_room`)."""
        if self._stopped or self._ended:
            return True
        pending = self._buffer.end - self._transcribed_until
        # Up to what the next step may hear, and always enough audio to start a step.
        if len(self._buffer) < self._max_step_samples or pending < self._min_chunk_samples:
            return True
        return pending < self._max_pending_samples and self.lead_seconds < MAX_LEAD_SECONDS

    async def wait_for_room(self) -> None:
        """Wait until more audio may be received: the buffer holds at most one step's audio (`MAX_STEP_SECONDS`,
        plus the last frame read), or, for a client sending in real time, `max_pending_seconds` wait for a step.

        The receive loop awaits this before reading the next frame, so a client that sends faster than the
        session transcribes is held back by TCP flow control, and memory stays bounded whatever its rate.
        """
        if self.has_room:
            return
        self._held_since = self._clock()
        try:
            while not self.has_room:
                self._room.clear()
                await self._room.wait()
        finally:
            self._lead, self._lead_at = self.lead_seconds, self._clock()
            self._held_since = None

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
        """Append a frame of 16 kHz int16 little-endian PCM; wake the worker once a chunk of new audio is in."""
        self._check_open()
        received = self._buffer.end
        self._buffer.append(pcm)
        self._arrived(self._buffer.end - received)

    def feed_samples(self, samples: np.ndarray) -> None:
        """Append 16 kHz float32 samples (audio already decoded from another format)."""
        self._check_open()
        self._buffer.append_samples(samples)
        self._arrived(len(samples))

    def pause_at(self, sample: int, *, heard_by: int | None = None) -> None:
        """A VAD heard the speech pause at `sample` (this transcriber's timeline): once a step has heard past
        it, the words before it are confirmed on that step's say, without waiting for a second hearing, as
        at the end of a turn. Whisper rarely revises words that a pause has closed off.

        `heard_by` (at least `sample`; default `sample`): how far that step must have heard. Where the VAD
        decided, so that the step heard the last word whole and some silence after it (a step that stopped
        where the silence began was seen to confirm "Americans" as "America").

        A step starts now (without waiting for a chunk of new audio) and ends at `heard_by`: the pause may be
        the end of the turn, and when it is, that step is the turn's last (see `end`'s `speech_until`)."""
        self._pause = (sample, max(sample, heard_by if heard_by is not None else sample))
        self._work.set()

    def end(self, *, speech_until: int | None = None) -> None:
        """No more audio: the updates cover what is left, confirm the tentative tail and stop.

        `speech_until`: a sample index (on this transcriber's timeline) past which the audio is known to hold
        no speech (a VAD said so). When the last step already heard that far, the tentative tail is confirmed
        as it stands, without one more step on the silence: the turn completes a step sooner.
        """
        self._ended = True
        self._speech_until = speech_until
        self._work.set()
        self._room.set()

    async def updates(self) -> AsyncIterator[LiveUpdate]:
        """Transcribe as audio arrives until `end`, yielding each change; `text` is then the final transcript."""
        cancel_with_current_task()  # a session that ends takes its queued model calls out of the batch queue
        try:
            while True:
                await self._work.wait()
                self._work.clear()
                if self._buffer.end > self._transcribed_until and not self._heard_all_speech:
                    self._stepping = True
                    try:
                        update = await self._step()
                    finally:
                        self._stepping = False
                    if update is not None:
                        yield update
                    if self._ended or self._buffer.end - self._transcribed_until >= self._min_chunk_samples:
                        self._work.set()
                elif self._ended:
                    break
            # Whether or not a VAD said where the speech ended, a tail Whisper invented in the stream's last
            # silence ("country. Thank you.") does not go into the transcript.
            heard_until = math.inf if self._speech_until is None else self._speech_until / SAMPLE_RATE
            speech_until = _before_invented_tail(self._policy.unconfirmed, heard_until)
            update = self._update_for(self._policy.flush(speech_until=speech_until))
            if update is not None:
                yield update
        finally:
            # A receive loop waiting for room must not wait for a worker that is gone.
            self._stopped = True
            self._room.set()

    @property
    def _heard_all_speech(self) -> bool:
        return self._ended and self._speech_until is not None and self._transcribed_until >= self._speech_until

    def _check_open(self) -> None:
        if self._ended:
            raise RuntimeError("audio fed after the end of the stream")

    def _arrived(self, samples: int) -> None:
        now = self._clock()
        self._lead = max(0.0, self._lead - (now - self._lead_at)) + samples / SAMPLE_RATE
        self._lead_at = now
        self._wake_if_due()

    def _wake_if_due(self) -> None:
        if self._buffer.end - self._transcribed_until >= self._min_chunk_samples:
            self._work.set()

    async def _step(self) -> LiveUpdate | None:
        # The slot first, the audio after: audio that arrives while the step waits in the queue is included.
        slot = await self._acquire_slot()
        try:
            start = self._buffer.start
            # At most `STEP_NEW_SECONDS` past what the last step heard: the next step must hear those words
            # again to confirm them. (Counted from the buffer's start instead, a step after a deep cut took
            # 12 s of new audio, and then the buffer could only be kept bounded by forcing words in.)
            until = min(
                self._buffer.end, self._transcribed_until + self._step_new_samples, start + self._max_step_samples
            )
            if self._pause is not None and self._pause[1] > self._transcribed_until:
                # The step after a pause ends where the VAD heard it, however late it starts: its audio, and
                # so the words it confirms, do not depend on how busy the server is.
                until = min(until, self._pause[1])
            # Taken now: a later pause heard while this step runs must not stand in for this one.
            pause = self._pause if self._pause is not None and self._pause[1] <= until else None
            audio = self._buffer.samples(until)
            offset = start / SAMPLE_RATE
            prompt = self._prompt(offset)
            self._transcribed_until = until
            self._room.set()
            # A step at a pause or at the end is taken on its own say: it hears the full window.
            decisive = pause is not None or (self._ended and until == self._buffer.end)
            job = functools.partial(
                transcribe_buffer, self._model, audio, self._language, prompt, self._task, decisive=decisive
            )
            step: asyncio.Future[Hypothesis] = slot.run_detached(job)
        finally:
            # Given back once the job's thread is done, never earlier.
            slot.finish()
        step.add_done_callback(_retrieve_exception)
        self._in_flight = step
        self._steps += 1
        # Shielded: when the session is cancelled the step still runs to its end in the pool, and
        # `after_current_step` knows when the model is no longer in use.
        hypothesis = await asyncio.shield(step)
        confirmation = self._policy.insert(hypothesis.words, offset)
        if not self._language_fixed and confirmation.words:
            # Detecting the language again on every short buffer lets it flip; the first one that
            # confirmed words is kept for the rest of the session.
            self._language = hypothesis.language
            self._language_fixed = True
        self._heard_language = hypothesis.language
        if pause is not None:
            paused, _ = self._policy.force_confirm(
                _before_invented_tail(self._policy.unconfirmed, pause[0] / SAMPLE_RATE)
            )
            confirmation = _joined(confirmation, paused)
            if self._pause == pause:
                self._pause = None
        unheard = None if hypothesis.unheard_from is None else offset + hypothesis.unheard_from
        forced = self._trim(heard_words=bool(hypothesis.words), heard_until=until, unheard_from=unheard)
        self._room.set()  # the cut may have made room
        return self._update_for(_joined(confirmation, forced))

    async def _acquire_slot(self) -> Slot:
        """A pool slot for the next step; while the queue is full, wait and try again (audio keeps coming)."""
        delay, longest = BUSY_RETRY_SECONDS
        while True:
            try:
                return await self._pool.acquire_slot()
            except PoolBusyError:
                logger.info("inference queue full; the live step waits %.2f s and tries again", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    def _prompt(self, offset: float) -> str:
        confirmed = self._policy.prompt(offset, max_chars=PROMPT_CHARS)
        if not self._context:
            return confirmed
        text = f"{self._context} {confirmed}".strip()
        if len(text) <= PROMPT_CHARS:
            return text
        tail = text[-PROMPT_CHARS:]
        return tail.split(" ", 1)[1] if " " in tail else tail

    def _update_for(self, confirmation: Confirmation) -> LiveUpdate | None:
        """The update a confirmation makes, or None when neither the text nor the tentative tail changed."""
        unconfirmed = self._policy.unconfirmed_text
        if not confirmation.text and unconfirmed == self._last_unconfirmed:
            return None
        self._last_unconfirmed = unconfirmed
        return LiveUpdate(
            delta=confirmation.text,
            text=self._policy.confirmed_text,
            unconfirmed=unconfirmed,
            words=confirmation.words,
            language=self.language,
        )

    def _trim(self, *, heard_words: bool, heard_until: int, unheard_from: float | None) -> Confirmation:
        """Cut the buffer after a step; returns what had to be confirmed to keep it bounded (usually nothing).

        `unheard_from`: where (absolute seconds) speech begins that the step's words skipped, if any."""
        start = self._buffer.start / SAMPLE_RATE
        heard = heard_until / SAMPLE_RATE
        cut = self._policy.trim_point(start, heard, self._max_buffer_seconds)
        if cut is None and not heard_words and unheard_from is None:
            # Silence (or noise Whisper makes nothing of): no need to hear it again, bar the very end.
            cut = heard - SILENCE_KEEP_SECONDS
        forced = Confirmation()
        if heard - max(cut or start, start) > self._max_buffer_seconds:
            # A whole buffer of heard audio and Whisper has not agreed with itself over its older part (noise,
            # music, a clause it hears differently every time). Rather than drop that audio unconfirmed, its
            # words as the latest step heard them are confirmed, and the buffer is cut after them; never into
            # speech that step skipped (the next step hears it from the buffer's start), unless that makes no
            # progress at all: then the bound wins.
            until = heard - self._max_buffer_seconds / 2
            limit = until if unheard_from is None else min(until, unheard_from)
            forced, forced_cut = self._force_confirm(limit)
            if limit < until and forced_cut <= start + FORCED_CUT_MARGIN_SECONDS:
                logger.warning(
                    "live buffer cut through speech that Whisper skipped twice (%.1f s heard)", heard - start
                )
                more, forced_cut = self._force_confirm(until)
                forced = _joined(forced, more)
            cut = max(cut or start, forced_cut)
        if cut is not None and cut > start:
            self._buffer.trim_to(round(cut * SAMPLE_RATE))
        return forced

    def _force_confirm(self, until: float) -> tuple[Confirmation, float]:
        """Confirm the tentative words before `until` as they stand; returns them and where to cut after them."""
        forced, cut = self._policy.force_confirm(until)
        if forced.words:
            # Never past the last word it heard: Whisper sometimes stops early in a window and skips the rest,
            # and that audio must be heard again, not cut with the words before it.
            cut = min(cut, max(word.end for word in forced.words) + FORCED_CUT_MARGIN_SECONDS)
        return forced, cut


def _before_invented_tail(words: tuple[Word, ...], until: float) -> float:
    """`until`, or earlier where an invented tail begins (see `INVENTED_WORD_PROBABILITY`)."""
    for word in words[-2:]:
        if word.probability < INVENTED_WORD_PROBABILITY and word.end - word.start < INVENTED_WORD_SECONDS:
            return min(until, word.start)
    return until


def _joined(first: Confirmation, second: Confirmation) -> Confirmation:
    if not second.words:
        return first
    return Confirmation(words=first.words + second.words, text=first.text + second.text)


def _retrieve_exception(future: asyncio.Future[Hypothesis]) -> None:
    # A step abandoned by a cancelled session may fail with nobody awaiting it; that is not worth a warning.
    if not future.cancelled():
        future.exception()
