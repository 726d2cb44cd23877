"""One live step's hearing of the buffer: Whisper's transcription of it, and the check that it skipped no speech.

Whisper sometimes jumps over seconds of speech in the middle of a window: seen with a prompt that ends
mid-sentence, or that repeats what the audio says next, as if it had been transcribed already. The word
timing then stretches the word before the jump over the skipped audio. A live session must not confirm
such a hearing as it stands and cut the audio after it (that lost three sentences in an hour of speech),
so each hearing is checked against Silero, the VAD model faster-whisper ships: speech that no word covers,
for long enough, was skipped (`unheard_speech`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from speaches.live.local_agreement import normalize_word
from speaches.live.pcm_buffer import SAMPLE_RATE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Word

logger = logging.getLogger(__name__)

LiveTask = Literal["transcribe", "translate"]

BEAM_SIZE = 1
"""Greedy decoding: on CPU it halves each step's time against beam 5, which buys more latency than it costs WER."""
TRANSLATE_BEAM_SIZE = 5
"""Translation is where greedy decoding falls short: base turned "Comment t'appelles-tu ?" into "How do you call
the Tuf ?" greedily and into "How do you call yourself?" with beam 5. Worth the slower steps."""
STEP_TOKENS_PER_SECOND = 8
STEP_TOKENS_BASE = 32
"""A step decodes at most BASE + PER_SECOND x its audio's seconds tokens per window: twice what the fastest
speech needs (about 4 text tokens a second, plus timestamps), so a decoder caught in a repetition loop stops
there instead of at Whisper's 448."""


def max_step_tokens(audio_seconds: float) -> int:
    return STEP_TOKENS_BASE + math.ceil(STEP_TOKENS_PER_SECOND * audio_seconds)


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """One transcription of the buffer: its words (timed from the buffer's start) and language."""

    words: list[Word]
    language: str
    unheard_from: float | None = None
    """Where the first stretch of speech begins that no word covers (`unheard_speech`), in seconds from the
    buffer's start: Whisper skipped it, so the audio from there on must be heard again, not cut."""


def transcribe_buffer(
    model: WhisperModel,
    audio: np.ndarray,
    language: str | None,
    prompt: str,
    task: LiveTask = "transcribe",
    *,
    decisive: bool = False,
) -> Hypothesis:
    """Transcribe (or translate into English) the buffer once, with word timestamps (blocking: run it in the
    inference pool).

    The cost is bounded: one temperature (Whisper's fallback to sampling at higher temperatures was measured
    taking 17.5 s on a 4 s step of repetitive speech, and then the next step had 17 s of audio to catch up
    on), and at most `max_step_tokens` decoded tokens per window. `condition_on_previous_text=False` because
    the buffer's own earlier windows are re-heard every step; the text before the buffer comes in as
    `initial_prompt` instead. The VAD filter keeps Whisper from inventing words in silence and skips silent
    stretches cheaply; word times are mapped back onto the buffer by faster-whisper.

    Whisper sometimes skips seconds of speech in the middle of the buffer (see `unheard_speech`), seen after
    a prompt that ends mid-sentence or that repeats what the audio says next. When it does and there was a
    prompt, the step is decoded once more without it, and the hearing that leaves less speech unheard is
    kept (seen hearing all three sentences the prompted one skipped). What stays unheard is marked on the
    hypothesis, for `LiveTranscriber._trim`.

    `decisive`: the step's words will be taken on this one hearing (a pause, the end of the stream), and its
    audio ends in silence: it hears Whisper's full 30 s window (`full_windows`). Any other step hears a content
    window where the model cuts them (`WHISPER__CONTENT_WINDOWS=live` or `all`), and is heard again at 30 s if
    that came out as a repetition loop.
    """
    from speaches.transcription.content_window import content_windows, full_windows

    with full_windows() if decisive else content_windows():
        return _hear(model, audio, language, prompt, task)


def _hear(model: WhisperModel, audio: np.ndarray, language: str | None, prompt: str, task: LiveTask) -> Hypothesis:
    hypothesis = _decode(model, audio, language, prompt, task)
    unheard = unheard_speech(audio, hypothesis.words)
    if prompt and unheard:
        again = _decode(model, audio, language, "", task)
        unheard_again = unheard_speech(audio, again.words)
        if unheard_seconds(unheard_again) < unheard_seconds(unheard):
            hypothesis, unheard = again, unheard_again
    if unheard:
        return dataclasses.replace(hypothesis, unheard_from=unheard[0][0])
    return hypothesis


def _decode(model: WhisperModel, audio: np.ndarray, language: str | None, prompt: str, task: LiveTask) -> Hypothesis:
    from speaches.transcription.content_window import cuts_windows, full_windows

    segments, info = model.transcribe(
        audio,
        task=task,
        language=language,
        initial_prompt=prompt or None,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=True,
        beam_size=TRANSLATE_BEAM_SIZE if task == "translate" else BEAM_SIZE,
        temperature=0.0,
        max_new_tokens=max_step_tokens(len(audio) / SAMPLE_RATE),
    )
    heard = list(segments)
    words = [word for segment in heard for word in segment.words or ()]
    if cuts_windows(model) and (
        any(segment.compression_ratio > LOOP_COMPRESSION_RATIO for segment in heard)
        or repeats_itself(words)
        or untimed_runs(words)
    ):
        logger.info("a live step's content window came out as a loop; it is heard again at 30 s")
        with full_windows():
            return _decode(model, audio, language, prompt, task)
    return Hypothesis(words=spoken_words(words), language=info.language)


def spoken_words(words: Sequence[Word]) -> list[Word]:
    """`words` without those that hold no speech: a "word" of punctuation alone, and every word of an
    untimed run (`untimed_runs`).

    Both are how Whisper's loops come out, at 30 s windows too: tiny.en heard a 2.2 s buffer ending in "for
    you." as that and then 36 "." words at one instant, and each later step on that buffer as dots alone; had
    they been kept, two such hearings agree and the dots are confirmed. Dropped, nothing is lost: a real word
    always has letters, digits or signs, and audio of its own.
    """
    untimed = {index for first, last in untimed_runs(words) for index in range(first, last)}
    return [word for index, word in enumerate(words) if index not in untimed and normalize_word(word.word)]


LOOP_COMPRESSION_RATIO = 2.4
"""A hearing whose text gzips this well is a repetition loop: faster-whisper's own threshold for retrying a
window at a higher temperature. Plain speech stays under 2 (1.6-1.8 on the licence reading)."""
LOOP_REPEATS = 3
LOOP_PHRASE_WORDS = 8
"""A phrase of up to this many words said `LOOP_REPEATS` times in a row is a loop too: short loops gzip no better
than speech ("n, n, n, n, n, n, n, n, n," at 2.0; "And so my fellow Americans." three times at 2.38)."""


def repeats_itself(words: Sequence[Word]) -> bool:
    """Whether some phrase of 1 to `LOOP_PHRASE_WORDS` words comes `LOOP_REPEATS` times in a row, words compared
    as LocalAgreement compares them (`normalize_word`). Speech that does ("no, no, no") only costs a second
    hearing at 30 s."""
    said = [text for text in (normalize_word(word.word) for word in words) if text]
    for size in range(1, LOOP_PHRASE_WORDS + 1):
        span = size * LOOP_REPEATS
        for start in range(len(said) - span + 1):
            phrase = said[start : start + size]
            if all(said[start + size * k : start + size * (k + 1)] == phrase for k in range(1, LOOP_REPEATS)):
                return True
    return False


UNTIMED_WORD_SECONDS = 0.05
UNTIMED_RUN_WORDS = 4
"""This many words in a row, each aligned to less than `UNTIMED_WORD_SECONDS` of audio, are text the audio does
not hold (four words take more than 0.2 s to say): seen where a content window wrote a sentence twice ("turn on
the living room lamp." the second time all at one instant, 2.2-2.2 s), where it wrote jfk's first sentence into
the middle of his second, and in the dots of `spoken_words`."""


def untimed_runs(words: Sequence[Word]) -> list[tuple[int, int]]:
    """Each run of at least `UNTIMED_RUN_WORDS` consecutive words shorter than `UNTIMED_WORD_SECONDS`, as
    (first index, index after the last)."""
    runs = []
    first = 0
    for index, word in enumerate([*words, None]):
        if word is not None and word.end - word.start < UNTIMED_WORD_SECONDS:
            continue
        if index - first >= UNTIMED_RUN_WORDS:
            runs.append((first, index))
        first = index + 1
    return runs


UNHEARD_SPEECH_SECONDS = 2.0
"""Speech this long without a word is skipped speech: longer than any pause inside a sentence."""
UNHEARD_TAIL_SECONDS = 1.5
"""The buffer's last seconds are not held against a hypothesis: a word may still be arriving there."""
WORD_REACH_SECONDS = 0.3
"""How far past its own times a word counts as covering the audio (word times are approximate)."""
MAX_WORD_SECONDS = 1.2
"""A word covers at most this much audio, however long its timing says it is: over skipped speech the word
before the jump was seen stretched over 8 s."""


def unheard_speech(audio: np.ndarray, words: Sequence[Word]) -> list[tuple[float, float]]:
    """Each stretch between words that holds at least `UNHEARD_SPEECH_SECONDS` of speech, as (start, end) of
    that speech in seconds from the start of `audio` (16 kHz float32), in order; blocking (run it in the
    inference pool). Silero only runs when the words leave a gap that long, which plain speech rarely does.
    """
    horizon = len(audio) / SAMPLE_RATE - UNHEARD_TAIL_SECONDS
    gaps = _uncovered(words, horizon)
    if not gaps:
        return []
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    speech = [
        (chunk["start"] / SAMPLE_RATE, chunk["end"] / SAMPLE_RATE)
        for chunk in get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=500, speech_pad_ms=100))
    ]
    stretches = []
    for gap_start, gap_end in gaps:
        # Summed over the gap: skipped sentences come with their pauses.
        inside = [
            (max(gap_start, start), min(gap_end, end)) for start, end in speech if start < gap_end and end > gap_start
        ]
        if sum(end - start for start, end in inside) >= UNHEARD_SPEECH_SECONDS:
            stretches.append((inside[0][0], inside[-1][1]))
    return stretches


def unheard_seconds(stretches: Sequence[tuple[float, float]]) -> float:
    return sum(end - start for start, end in stretches)


def _uncovered(words: Sequence[Word], horizon: float) -> list[tuple[float, float]]:
    """The stretches of [0, horizon] at least `UNHEARD_SPEECH_SECONDS` long that no word reaches."""
    covered = sorted(
        (word.start - WORD_REACH_SECONDS, min(word.end, word.start + MAX_WORD_SECONDS) + WORD_REACH_SECONDS)
        for word in words
    )
    gaps = []
    cursor = 0.0
    for first, last in [*covered, (horizon, horizon)]:
        end = min(first, horizon)
        if end - cursor >= UNHEARD_SPEECH_SECONDS:
            gaps.append((cursor, end))
        cursor = max(cursor, last)
        if cursor >= horizon:
            break
    return gaps
