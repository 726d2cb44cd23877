"""A long first sentence is spoken clause first, so the first audio needs less synthesis than piper's own.

No clocks: what is checked is how much audio the first piece holds (the synthesis it waited for),
against the first chunk of piper's own `synthesize`, with the real bundled voice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from speaches.config import Settings
from speaches.models.catalog import Kind, ModelRef
from speaches.speech.piper import (
    MIN_CLAUSE_PHONEMES,
    load_piper_voice,
    speak_sentences,
    split_first_clause,
    synthesize_speech,
)

if TYPE_CHECKING:
    from piper import PiperVoice

LONG_FIRST_SENTENCE = (
    "When the library opens its doors at nine in the morning, visitors who hold a card may borrow up to ten "
    "books at a time, reserve a reading room, or ask at the front desk for a laptop. Children need an adult."
)
SHORT_FIRST_SENTENCE = (
    "The library opens at nine. Visitors who hold a card, and the children with them, may borrow up to ten "
    "books at a time from the shelves upstairs."
)


def phonemes(text: str) -> list[str]:
    return list(text)


def test_a_short_sentence_stays_whole() -> None:
    sentence = phonemes("a short one, with a comma")
    assert split_first_clause(sentence) == [sentence]


def test_a_long_sentence_is_cut_after_its_first_clause_mark() -> None:
    sentence = phonemes("when the doors open at nine in the morning, " + "visitors may borrow books " * 3)
    head, tail = split_first_clause(sentence)
    assert "".join(head) == "when the doors open at nine in the morning,"
    assert "".join(tail) == ("visitors may borrow books " * 3).strip()


def test_a_clause_too_short_on_either_side_is_not_cut_off() -> None:
    early = phonemes("yes, " + "the doors open at nine in the morning and visitors may borrow books " * 2)
    assert split_first_clause(early) == [early], "'yes,' alone is too short a clause"
    late = phonemes("the doors open at nine in the morning and visitors may borrow books " * 2 + ", yes")
    assert split_first_clause(late) == [late]
    assert len("yes,") < MIN_CLAUSE_PHONEMES


def test_no_clause_mark_means_no_cut() -> None:
    sentence = phonemes("the doors open at nine in the morning and visitors may borrow books " * 2)
    assert split_first_clause(sentence) == [sentence]


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    return load_piper_voice(ModelRef(Kind.TTS, "en_US-joe-medium"), Settings()).model


def test_the_first_audio_waits_only_for_the_first_clause(voice: PiperVoice) -> None:
    piper_first = next(iter(voice.synthesize(LONG_FIRST_SENTENCE)))
    piper_first_seconds = len(piper_first.audio_float_array) / voice.config.sample_rate

    pieces = synthesize_speech(voice, LONG_FIRST_SENTENCE, response_format="pcm")
    first_seconds = len(next(pieces)) / 2 / 24_000
    rest_seconds = sum(len(piece) for piece in pieces) / 2 / 24_000

    # The opening clause is about a fifth of the first sentence.
    assert first_seconds < 0.5 * piper_first_seconds
    # Nothing is lost: all of the text is still spoken (piper's random durations vary by a few percent).
    piper_total = sum(len(chunk.audio_float_array) for chunk in voice.synthesize(LONG_FIRST_SENTENCE))
    assert first_seconds + rest_seconds == pytest.approx(piper_total / voice.config.sample_rate, rel=0.15)


def test_only_the_first_sentence_is_cut(voice: PiperVoice) -> None:
    sentences = len(voice.phonemize(LONG_FIRST_SENTENCE))
    assert len(list(speak_sentences(voice, LONG_FIRST_SENTENCE))) == sentences + 1
    # A first sentence short enough to synthesize quickly is left whole, even with a long second one.
    assert len(list(speak_sentences(voice, SHORT_FIRST_SENTENCE))) == len(voice.phonemize(SHORT_FIRST_SENTENCE))
