"""LocalAgreement-2: decide which words of a streaming transcription are final.

After Macháček, Dabre and Bojar, "Turning Whisper into Real-Time Transcription System" (2023). The live
session transcribes its unconfirmed audio buffer again each time enough new audio has arrived; each such
transcription is a *hypothesis*. A word is *confirmed* once two consecutive hypotheses agree on it, as part
of their longest common prefix after what is already confirmed. Confirmed text only ever grows.

This module is pure: no audio, no model, no I/O. The session owns the audio buffer and the model call and
feeds the words in here; it asks `LocalAgreement.trim_point` where it may cut its buffer and
`LocalAgreement.prompt` what to prompt the model with.

Words are faster-whisper's own `Word` dataclass, passed through rather than re-wrapped in a parallel type:
its times are seconds from the start of the audio it was given, and here that audio is the buffer, so
`insert` moves every word onto the session's absolute timeline by the buffer's offset (a new `Word` via
`dataclasses.replace`; the caller's objects are never modified). Every word this module keeps or returns
is timed absolutely.

Memory stays bounded over hours: the full confirmed *text* is kept (the final message needs it; about
50 kB per hour of speech), but confirmed *words* only as far as the policy needs them (the last few, and
those whose audio may still be in the buffer). `insert` and `flush` return the newly confirmed words, so
a caller that wants every word (for word timestamps, say) collects them itself.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only annotations: importing faster_whisper at start-up would load CTranslate2 into an idle server.
    from faster_whisper.transcribe import Word


# Characters that end a sentence in the scripts Whisper writes: Latin, CJK (ideographic and full/half-width
# forms), Arabic and Urdu, Devanagari, Ethiopic, Armenian, and the Greek question mark (U+037E).
_SENTENCE_TERMINATORS = frozenset(".!?…‼⁇⁈⁉。．｡？！؟۔।॥።፧։՞\u037e")
# Straight quotes are "other punctuation" (Po) in Unicode, so they are listed beside the closing categories.
_STRAIGHT_QUOTES = frozenset("\"'")


def normalize_word(text: str) -> str:
    """The form in which two words are compared: "Hello," and "hello" agree, as do "Straße" and "STRASSE".

    Unicode NFKC (full-width letters, composed umlauts), then case folding (which also maps ß to ss and the
    Greek final sigma to sigma), then NFKC again because folding can leave unnormalised sequences, and
    finally every punctuation character (Unicode category P*) and the surrounding whitespace removed.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return "".join(char for char in folded if not unicodedata.category(char).startswith("P")).strip()


def ends_sentence(text: str) -> bool:
    """Whether a word ends a sentence: "world.", "¿Qué?", "世界。", a closing quote after the stop ("stop.”").

    Abbreviations ("Mr.") count too; the only use is choosing where to cut audio, where a cut at a word
    boundary that is not truly a sentence end costs nothing but a little context.
    """
    stripped = text.rstrip()
    while stripped and (stripped[-1] in _STRAIGHT_QUOTES or unicodedata.category(stripped[-1]) in {"Pe", "Pf", "Pi"}):
        stripped = stripped[:-1]
    return bool(stripped) and stripped[-1] in _SENTENCE_TERMINATORS


def join_words(words: Iterable[Word], preceding_text: str = "") -> str:
    """The text to append to `preceding_text` so that it reads on with `words`.

    faster-whisper's words carry their own separator: " world" in languages written with spaces, "世界" in
    those written without, "-known" for the second half of a hyphenated word. That separator is the only
    language-independent evidence of where spaces belong, so it is kept, with three repairs: leading
    whitespace of any length counts as one space; no space goes at the very start of the text or after text
    that already ends in whitespace; a word that is only whitespace adds nothing. Every piece ends in a
    non-space character, so two spaces never meet, and appending the words in several batches (each joined
    after the text so far) gives the same text as joining them all at once.
    """
    pieces: list[str] = []
    # True where a leading space would be wrong: at the start of the text or right after whitespace.
    at_open_position = preceding_text == "" or preceding_text[-1].isspace()
    for word in words:
        body = " ".join(word.word.split())
        if not body:
            continue
        if word.word[0].isspace() and not at_open_position:
            pieces.append(" ")
        pieces.append(body)
        at_open_position = False
    return "".join(pieces)


def _midpoint(word: Word) -> float:
    return (word.start + word.end) / 2


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What one `insert` or `flush` confirmed.

    `words` are the newly confirmed words, timed absolutely. `text` is the delta: the confirmed text after
    the call is exactly the confirmed text before it plus `text` (so it may begin with a space).
    """

    words: tuple[Word, ...] = ()
    text: str = ""


class LocalAgreement:
    """The LocalAgreement-2 state of one live session.

    The caller loop: transcribe the audio buffer (which starts at `buffer_offset` seconds on the session's
    timeline) with `word_timestamps=True` and `initial_prompt=policy.prompt(buffer_offset)`; pass the words
    to `insert`, send the returned delta; cut the buffer at `trim_point(...)` when it returns a time; at the
    end of the stream transcribe once more, `insert`, then `flush`.

    Two mechanisms keep already-confirmed words out of a new hypothesis, because the buffer is only cut at
    sentence ends and so usually still holds audio of words that are already confirmed:

    - by time: a hypothesis word is dropped when its midpoint lies before the end of the last confirmed
      word, i.e. most of it covers confirmed audio. The midpoint rather than either edge because Whisper's
      word edges jitter by a few hundredths of a second between runs: a short new word right after the
      confirmed ones (where an end-based rule would drop it) and a re-timed confirmed word both still fall
      on their own side;
    - by text: Whisper often repeats the last few confirmed words at the head of a new hypothesis, timed so
      that the time rule cannot tell (after a cut their audio is gone, and the repeat is squeezed onto the
      start of the buffer). The longest run of up to `max_repeat_words` words that ends the confirmed text
      and begins the hypothesis (compared normalised) is removed, but only where the hypothesis' first word
      could be such a repeat: it starts inside the confirmed audio, or the buffer was cut at the confirmed
      end and the word starts within `repeat_window` seconds of the cut. Elsewhere a repeat is genuine
      speech ("no, no, no") and is kept.

    Agreement itself is positional: the i-th new word of one hypothesis is compared with the i-th of the
    next, so repeated words are never merged.
    """

    def __init__(
        self,
        *,
        boundary_tolerance: float = 0.1,
        max_repeat_words: int = 5,
        repeat_window: float = 1.0,
        cut_margin: float = 0.0,
        max_word_seconds: float = 1.0,
    ) -> None:
        """`boundary_tolerance`: seconds within which two times at a word boundary count as the same.

        `max_repeat_words`: the longest run of repeated confirmed words removed from a hypothesis' head.
        `repeat_window`: after a cut at the confirmed end, how far into the buffer a repeat may start.
        `cut_margin`: how far before the next word's start a cut is made (see `trim_point`). 0 by default: with
        0.25 s, four concurrent jfk sessions lost "ask what you can do for" in about one run of two (the
        buffer then began inside "you.", and Whisper, prompted with "... can do for you.", skipped on to
        "your country"); with 0 a cut still never goes past the next word's start.
        `max_word_seconds`: the most audio a confirmed word counts as covering, whatever its timing says: near
        a buffer's end Whisper squeezes the last words, and a confirmed "not" timed over 1.4 s hid the "what"
        after it from the time rule, which then dropped "what" from every later hypothesis.
        """
        self._boundary_tolerance = boundary_tolerance
        self._repeat_window = repeat_window
        self._cut_margin = cut_margin
        self._max_word_seconds = max_word_seconds
        self._confirmed_text = ""
        self._recent_confirmed: deque[Word] = deque(maxlen=max_repeat_words)
        self._last_confirmed_end: float | None = None
        # The confirmed word that ends the latest sentence, and the confirmed word after it (once there is one).
        self._sentence_end_word: Word | None = None
        self._after_sentence_end: Word | None = None
        # The latest hypothesis after its confirmed part: what the next hypothesis must agree with.
        self._unconfirmed: list[Word] = []
        self._buffer_offset = 0.0
        # (end time, length of the confirmed text up to and including the word) for each confirmed word whose
        # audio may still be in the buffer; bounded by the buffer. The prompt takes text only up to
        # `_text_before_buffer` because Whisper tends to skip speech that its prompt already contains.
        self._confirmed_in_buffer: deque[tuple[float, int]] = deque()
        self._text_before_buffer = 0

    @property
    def confirmed_text(self) -> str:
        """Everything confirmed so far; only ever grows."""
        return self._confirmed_text

    @property
    def unconfirmed(self) -> tuple[Word, ...]:
        """The tentative tail: the latest hypothesis after its confirmed part (absolute times)."""
        return tuple(self._unconfirmed)

    @property
    def unconfirmed_text(self) -> str:
        """The tentative tail as text that reads on from `confirmed_text` (so it may begin with a space)."""
        return join_words(self._unconfirmed, self._confirmed_text)

    @property
    def last_confirmed_end(self) -> float | None:
        """End time of the latest confirmed audio, or None before anything is confirmed."""
        return self._last_confirmed_end

    def insert(self, hypothesis: Iterable[Word], buffer_offset: float) -> Confirmation:
        """Take a new hypothesis and confirm the words on which it agrees with the previous one.

        `hypothesis`: the words faster-whisper returned for the audio buffer, timed from the buffer's start.
        `buffer_offset`: where the buffer starts on the session's timeline, in seconds; never decreases.
        """
        self._advance_buffer(buffer_offset)
        fresh = self._new_words(hypothesis, buffer_offset)
        # Tentative words whose audio the caller cut away can no longer be heard again.
        previous = [word for word in self._unconfirmed if _midpoint(word) >= buffer_offset]
        agreed = 0
        for earlier, later in zip(previous, fresh, strict=False):
            if normalize_word(earlier.word) != normalize_word(later.word):
                break
            agreed += 1
        # The later hypothesis heard more context, so its spelling and timing of the agreed words are kept.
        self._unconfirmed = fresh[agreed:]
        return self._confirm(fresh[:agreed])

    def flush(self, *, speech_until: float | None = None) -> Confirmation:
        """End of stream: confirm the latest hypothesis' tentative tail as it stands.

        `speech_until`: absolute seconds past which a VAD heard no speech. Tentative words that begin there
        are dropped: Whisper invents them in trailing silence ("Thank you.").
        """
        tail, self._unconfirmed = self._unconfirmed, []
        if speech_until is not None:
            tail = [word for word in tail if word.start < speech_until]
        return self._confirm(tail)

    def force_confirm(self, until: float) -> tuple[Confirmation, float]:
        """Confirm the tentative words whose midpoint lies before `until` (absolute seconds) as they stand.

        For a caller that must cut audio which two hypotheses never agreed on: its words go into the
        transcript as the latest hypothesis heard them, rather than being lost with the audio. Returns them,
        and where the audio may be cut: `until`, or earlier where a word that stays tentative begins.
        """
        count = 0
        while count < len(self._unconfirmed) and _midpoint(self._unconfirmed[count]) < until:
            count += 1
        forced, self._unconfirmed = self._unconfirmed[:count], self._unconfirmed[count:]
        cut = min(until, self._unconfirmed[0].start) if self._unconfirmed else until
        return self._confirm(forced), cut

    def trim_point(self, buffer_start: float, buffer_end: float, max_buffer_seconds: float) -> float | None:
        """Where the caller may cut its audio buffer (absolute seconds), or None to keep it whole.

        After the last confirmed sentence inside the buffer; failing that, once the buffer is longer than
        `max_buffer_seconds`, after the last confirmed word inside it. If nothing at all is confirmed inside an
        over-long buffer this returns None, and bounding memory then is the caller's call (such audio is
        usually noise that Whisper hears differently every time).

        The cut goes `cut_margin` before the next word's start where that comes sooner than the confirmed
        word's end (never before the confirmed word's midpoint): word edges are approximate, and a cut at
        "the"'s end took the "s" off the "software" that followed, which every later step then heard as
        "twitter". A sliver of the confirmed word left in the buffer costs nothing: the time rule drops it.
        """
        sentence = self._sentence_end_word
        if sentence is not None:
            cut = self._cut_after(sentence, self._after_sentence_end or self._next_tentative())
            if cut > buffer_start + self._boundary_tolerance:
                return cut
        buffer_too_long = buffer_end - buffer_start > max_buffer_seconds
        if buffer_too_long and self._recent_confirmed:
            last = self._recent_confirmed[-1]
            cut = self._cut_after(last, self._next_tentative())
            if cut > buffer_start + self._boundary_tolerance:
                return cut
        return None

    def _word_end(self, word: Word) -> float:
        """The end of the audio a confirmed word counts as covering (see `max_word_seconds`)."""
        return min(word.end, word.start + self._max_word_seconds)

    def _cut_after(self, word: Word, following: Word | None) -> float:
        cut = self._word_end(word)
        if following is not None:
            cut = min(cut, following.start - self._cut_margin)
        return max(cut, _midpoint(word))

    def _next_tentative(self) -> Word | None:
        return self._unconfirmed[0] if self._unconfirmed else None

    def prompt(self, buffer_offset: float, max_chars: int = 200) -> str:
        """Text to prompt the model with for a buffer starting at `buffer_offset`.

        The last `max_chars` characters (cut at a word boundary where there is one) of the confirmed text
        whose audio lies before the buffer. Confirmed words still inside the buffer are left out: given them
        in the prompt, Whisper tends to treat their audio as already transcribed and skip it.
        """
        self._advance_buffer(buffer_offset)
        end = self._text_before_buffer
        start = max(0, end - max_chars)
        tail = self._confirmed_text[start:end]
        cut_inside_word = start > 0 and not self._confirmed_text[start - 1].isspace()
        if cut_inside_word and " " in tail:
            tail = tail.split(" ", 1)[1]
        return tail.strip()

    def _advance_buffer(self, buffer_offset: float) -> None:
        if buffer_offset < self._buffer_offset:
            raise ValueError(
                f"buffer_offset went back from {self._buffer_offset} to {buffer_offset}; "
                "the audio buffer can only be cut at its start, never extended backwards"
            )
        self._buffer_offset = buffer_offset
        while self._confirmed_in_buffer and (
            self._confirmed_in_buffer[0][0] <= buffer_offset + self._boundary_tolerance
        ):
            _, self._text_before_buffer = self._confirmed_in_buffer.popleft()

    def _new_words(self, hypothesis: Iterable[Word], buffer_offset: float) -> list[Word]:
        """The hypothesis on the absolute timeline, without the words that are already confirmed."""
        words = [
            dataclasses.replace(word, start=word.start + buffer_offset, end=word.end + buffer_offset)
            for word in hypothesis
            if word.word.strip()
        ]
        if self._last_confirmed_end is None:
            return words
        confirmed_end = self._last_confirmed_end
        words = [word for word in words if _midpoint(word) >= confirmed_end]
        if not words or not self._could_repeat_confirmed(words[0], confirmed_end, buffer_offset):
            return words
        recent = [normalize_word(word.word) for word in self._recent_confirmed]
        head = [normalize_word(word.word) for word in words[: len(recent)]]
        for length in range(len(head), 0, -1):
            if recent[-length:] == head[:length]:
                return words[length:]
        return words

    def _could_repeat_confirmed(self, first_word: Word, confirmed_end: float, buffer_offset: float) -> bool:
        # While the confirmed audio is still in the buffer, Whisper aligns a repeated word to that audio.
        if first_word.start < confirmed_end - self._boundary_tolerance:
            return True
        # A confirmed word timed at one instant ("following" at 4.6-4.6) has its midpoint at the confirmed end,
        # so the time rule keeps it when it is heard there again: it was confirmed twice ("the following
        # following conditions"). A word that ends by the confirmed end is confirmed audio too.
        if first_word.end <= confirmed_end + self._boundary_tolerance:
            return True
        # Once the buffer was cut at the confirmed end, a repeat has no audio of its own and lands at the cut.
        cut_at_confirmed_end = buffer_offset >= confirmed_end - self._boundary_tolerance
        return cut_at_confirmed_end and first_word.start < buffer_offset + self._repeat_window

    def _confirm(self, words: list[Word]) -> Confirmation:
        if not words:
            return Confirmation()
        pieces: list[str] = []
        # join_words only looks at the last character before the words, so the growing text is not copied.
        last_char = self._confirmed_text[-1:]
        length = len(self._confirmed_text)
        for word in words:
            piece = join_words([word], last_char)
            pieces.append(piece)
            last_char = (last_char + piece)[-1:]
            length += len(piece)
            end = self._word_end(word)
            self._recent_confirmed.append(word)
            self._confirmed_in_buffer.append((end, length))
            # max() because Whisper's word times are not strictly monotonic; the boundary must not move back.
            if self._last_confirmed_end is None or end > self._last_confirmed_end:
                self._last_confirmed_end = end
            if ends_sentence(word.word):
                self._sentence_end_word, self._after_sentence_end = word, None
            elif self._sentence_end_word is not None and self._after_sentence_end is None:
                self._after_sentence_end = word
        delta = "".join(pieces)
        self._confirmed_text += delta
        return Confirmation(words=tuple(words), text=delta)
