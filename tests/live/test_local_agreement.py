"""Unit tests of the LocalAgreement-2 policy: constructed hypothesis sequences, no model, no audio."""

from __future__ import annotations

import random

import pytest
from faster_whisper.transcribe import Word

from speaches.live.local_agreement import (
    Confirmation,
    LocalAgreement,
    ends_sentence,
    join_words,
    normalize_word,
)


def timed(*items: tuple[str, float, float]) -> list[Word]:
    """Words as faster-whisper returns them: (text with its own leading space, start, end)."""
    return [Word(start=start, end=end, word=text, probability=0.9) for text, start, end in items]


def spoken(text: str, start: float = 0.0, duration: float = 0.4) -> list[Word]:
    """A space-delimited phrase as faster-whisper words, back to back, each `duration` seconds long."""
    return [
        Word(start=start + i * duration, end=start + (i + 1) * duration, word=" " + token, probability=0.9)
        for i, token in enumerate(text.split())
    ]


# --- normalisation, sentence ends, joining ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Hello,", " hello"),
        (" Straße", "STRASSE"),
        ("Äpfel!", "äpfel"),
        ("scho\u0308n", "schön"),  # decomposed umlaut vs composed
        ("ΟΔΟΣ", "οδος"),  # Greek capital sigma folds onto the final sigma
        ("«Привет»", "привет"),
        ("¿Qué?", "qué"),
        ("ＡＢＣ", "abc"),  # full-width letters
        ("「東京」", "東京"),
        ("世界。", "世界"),
        ("don't", "dont"),
    ],
)
def test_normalize_word_makes_spelling_variants_agree(left: str, right: str) -> None:
    assert normalize_word(left) == normalize_word(right)


@pytest.mark.parametrize(("left", "right"), [("Ice", "I"), ("Straße", "Strasse1"), ("мир", "мер"), ("東京", "京都")])
def test_normalize_word_keeps_different_words_apart(left: str, right: str) -> None:
    assert normalize_word(left) != normalize_word(right)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" world.", True),
        (" you?", True),
        (" wow!", True),
        (" ¿Qué?", True),
        ("世界。", True),
        ("元気？", True),
        (" Привет!", True),
        (" stop.”", True),
        (' "stop."', True),
        (" (end.)", True),
        (" hello,", False),
        (" Hello", False),
        (" 3,5", False),
        ("世界", False),
        (" ...", True),
    ],
)
def test_ends_sentence(text: str, expected: bool) -> None:
    assert ends_sentence(text) is expected


@pytest.mark.parametrize(
    ("texts", "preceding", "expected"),
    [
        ([" Hello", " world."], "", "Hello world."),
        ([" Hello", " world."], "Yes,", " Hello world."),
        ([" Hello", " world."], "Yes, ", "Hello world."),  # preceding text already ends in a space
        (["  Hello", "\n", " \tworld"], "", "Hello world"),  # whitespace runs and whitespace-only words
        ([" well", "-known"], "", "well-known"),  # faster-whisper splits hyphenated words without a space
        (["こんにちは", "世界。"], "", "こんにちは世界。"),
        (["元気", "ですか？"], "こんにちは。", "元気ですか？"),
        ([" Привет,", " мир!"], "", "Привет, мир!"),
        ([], "anything", ""),
    ],
)
def test_join_words(texts: list[str], preceding: str, expected: str) -> None:
    words = [Word(start=0.0, end=0.0, word=text, probability=1.0) for text in texts]
    assert join_words(words, preceding) == expected


# --- agreement -------------------------------------------------------------------------------------------


def test_words_are_confirmed_once_two_consecutive_hypotheses_agree() -> None:
    policy = LocalAgreement()

    first = policy.insert(spoken("Hello world"), buffer_offset=0.0)
    assert first == Confirmation()
    assert policy.unconfirmed_text == "Hello world"

    second = policy.insert(spoken("Hello world how"), buffer_offset=0.0)
    assert second.text == "Hello world"
    assert [word.word for word in second.words] == [" Hello", " world"]
    assert policy.unconfirmed_text == " how"

    third = policy.insert(spoken("Hello world how are you"), buffer_offset=0.0)
    assert third.text == " how"
    assert policy.confirmed_text == "Hello world how"
    assert policy.confirmed_text + policy.unconfirmed_text == "Hello world how are you"


def test_nothing_is_confirmed_until_two_hypotheses_agree() -> None:
    policy = LocalAgreement()
    assert policy.insert(spoken("I scream"), 0.0).words == ()
    assert policy.insert(spoken("Ice cream"), 0.0).words == ()
    assert policy.insert(spoken("I see cream"), 0.0).words == ()
    assert policy.confirmed_text == ""
    assert policy.insert(spoken("I see cream please"), 0.0).text == "I see cream"


def test_only_the_common_prefix_is_confirmed() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("the cat sat on"), 0.0)
    confirmation = policy.insert(spoken("the cat sad in the"), 0.0)
    assert confirmation.text == "the cat"
    assert policy.unconfirmed_text == " sad in the"
    # Agreement is a prefix: a later match ("the" at the end) after a disagreement confirms nothing.
    assert policy.insert(spoken("the cat sat in the"), 0.0).words == ()
    assert policy.confirmed_text == "the cat"


def test_repeated_words_are_kept_positionally() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("no no"), 0.0)
    assert policy.insert(spoken("no no no"), 0.0).text == "no no"
    # The buffer still holds the confirmed "no no"; the third "no" is new speech, not a repeat of them.
    assert policy.insert(spoken("no no no no"), 0.0).text == " no"
    assert policy.flush().text == " no"
    assert policy.confirmed_text == "no no no no"

    stutter = LocalAgreement()
    stutter.insert(spoken("the the cat"), 0.0)
    assert stutter.insert(spoken("the the cat sat"), 0.0).text == "the the cat"


def test_case_and_punctuation_differences_agree_and_the_later_spelling_wins() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("hello world"), 0.0)
    assert policy.insert(spoken("Hello, world!"), 0.0).text == "Hello, world!"


def test_cyrillic_words_agree_despite_case_and_punctuation() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("Привет, мир как"), 0.0)
    assert policy.insert(spoken("привет мир! Как дела?"), 0.0).text == "привет мир! Как"


def test_japanese_words_are_joined_without_spaces() -> None:
    policy = LocalAgreement()
    policy.insert(timed(("こんにちは", 0.0, 0.6), ("世界", 0.6, 1.0)), 0.0)
    second = policy.insert(timed(("こんにちは", 0.0, 0.6), ("世界。", 0.6, 1.0), ("元気", 1.0, 1.3)), 0.0)
    assert second.text == "こんにちは世界。"
    assert policy.trim_point(0.0, 1.3, max_buffer_seconds=30.0) == pytest.approx(1.0)
    assert policy.insert(timed(("元気", 0.0, 0.3), ("ですか？", 0.3, 0.8)), 1.0).text == "元気"
    assert policy.flush().text == "ですか？"
    assert policy.confirmed_text == "こんにちは世界。元気ですか？"


def test_german_umlauts_and_sharp_s_agree_across_spellings() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("Die Straße ist scho\u0308n"), 0.0)
    confirmation = policy.insert(spoken("die STRASSE ist schön, oder"), 0.0)
    assert confirmation.text == "die STRASSE ist schön,"


# --- removal of words that are already confirmed ----------------------------------------------------------


def test_confirmed_words_repeated_at_the_head_after_a_cut_are_removed() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("The cat sat on the mat."), 0.0)
    assert policy.insert(spoken("The cat sat on the mat. And"), 0.0).text == "The cat sat on the mat."
    cut = policy.trim_point(0.0, 2.8, max_buffer_seconds=30.0)
    assert cut == pytest.approx(2.4)
    assert cut is not None

    # Whisper hears the tail of "the mat." again, squeezed onto the start of the cut buffer, where the time
    # rule cannot recognise it (its audio is gone): only its text gives it away.
    repeat_then_new = timed((" the", 0.0, 0.05), (" mat.", 0.05, 0.1), (" And", 0.3, 0.6), (" then", 0.6, 0.9))
    assert policy.insert(repeat_then_new, cut).text == " And"
    assert policy.unconfirmed_text == " then"
    repeat_again = timed((" mat.", 0.0, 0.1), (" And", 0.3, 0.6), (" then", 0.6, 0.9), (" we", 0.9, 1.1))
    assert policy.insert(repeat_again, cut).text == " then"
    assert policy.confirmed_text == "The cat sat on the mat. And then"


def test_a_genuine_repeat_after_the_repeat_window_is_kept() -> None:
    policy = LocalAgreement(repeat_window=1.0)
    policy.insert(spoken("Stop."), 0.0)
    policy.insert(spoken("Stop. wait"), 0.0)
    assert policy.confirmed_text == "Stop."
    cut = policy.trim_point(0.0, 0.8, max_buffer_seconds=30.0)
    assert cut == pytest.approx(0.4)
    assert cut is not None
    # Said again after a long pause: by then it cannot be a left-over of the confirmed word.
    again = timed((" Stop.", 1.5, 1.9), (" Please", 2.0, 2.4))
    policy.insert(again, cut)
    assert policy.insert(again, cut).text == " Stop. Please"
    assert policy.confirmed_text == "Stop. Stop. Please"


def test_words_in_confirmed_audio_are_skipped_by_time_after_a_cut_at_an_earlier_sentence_end() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("Hello world. How are"), 0.0)
    policy.insert(spoken("Hello world. How are you"), 0.0)
    assert policy.confirmed_text == "Hello world. How are"
    cut = policy.trim_point(0.0, 2.0, max_buffer_seconds=30.0)
    assert cut == pytest.approx(0.8)  # after "world.", so "How are" is still in the buffer
    assert cut is not None

    # The new buffer starts at 0.8 s; Whisper now spells the confirmed "How are" differently. Their time
    # gives them away (they lie before the end of the confirmed audio, 1.6 s) although their text does not.
    rehearing = timed((" Howe", 0.0, 0.4), (" our", 0.4, 0.8), (" you", 0.8, 1.2), (" doing?", 1.2, 1.6))
    confirmation = policy.insert(rehearing, cut)
    assert confirmation.text == " you"
    assert confirmation.words[0].start == pytest.approx(1.6)  # absolute time: buffer offset + 0.8
    assert policy.unconfirmed_text == " doing?"
    assert policy.flush().text == " doing?"
    assert policy.confirmed_text == "Hello world. How are you doing?"


def test_a_short_new_word_right_after_the_confirmed_audio_is_kept() -> None:
    policy = LocalAgreement()
    policy.insert(timed((" Yes,", 0.0, 0.5)), 0.0)
    policy.insert(timed((" Yes,", 0.0, 0.5), (" I", 0.5, 0.58)), 0.0)
    # "I" ends within a tenth of a second of the confirmed "Yes," and even starts a little early this time.
    hypothesis = timed((" Yes,", 0.0, 0.5), (" I", 0.48, 0.58), (" think", 0.58, 0.9))
    assert policy.insert(hypothesis, 0.0).text == " I"


def test_times_are_moved_onto_the_session_timeline_without_touching_the_callers_words() -> None:
    policy = LocalAgreement()
    hypothesis = spoken("good morning")
    policy.insert(hypothesis, 10.0)
    confirmation = policy.insert(spoken("good morning everyone"), 10.0)
    assert [(word.start, word.end) for word in confirmation.words] == [(10.0, 10.4), (10.4, 10.8)]
    assert confirmation.words[0].probability == 0.9
    assert [(word.start, word.end) for word in hypothesis] == [(0.0, 0.4), (0.4, 0.8)]
    assert policy.last_confirmed_end == pytest.approx(10.8)
    assert [(word.start, word.end) for word in policy.unconfirmed] == [(10.8, 11.2)]


def test_the_buffer_offset_cannot_go_back() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("one"), 5.0)
    with pytest.raises(ValueError, match="buffer_offset went back"):
        policy.insert(spoken("one"), 4.0)


# --- flush, trim point, prompt ----------------------------------------------------------------------------


def test_flush_confirms_the_tentative_tail_once() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("see you"), 0.0)
    policy.insert(spoken("see you later"), 0.0)
    assert policy.flush().text == " later"
    assert policy.unconfirmed == ()
    assert policy.flush() == Confirmation()
    assert policy.confirmed_text == "see you later"


def test_trim_point_is_the_last_confirmed_sentence_end_inside_the_buffer() -> None:
    policy = LocalAgreement()
    assert policy.trim_point(0.0, 100.0, max_buffer_seconds=10.0) is None  # nothing confirmed at all

    policy.insert(spoken("one two three"), 0.0)
    policy.insert(spoken("one two three four"), 0.0)
    assert policy.trim_point(0.0, 5.0, max_buffer_seconds=10.0) is None  # no sentence end, buffer short
    # No sentence end for too long: cut after the last confirmed word to bound memory.
    assert policy.trim_point(0.0, 11.0, max_buffer_seconds=10.0) == pytest.approx(1.2)

    policy.insert(spoken("one two three four. five six"), 0.0)
    assert policy.confirmed_text == "one two three four."
    assert policy.trim_point(0.0, 5.0, max_buffer_seconds=10.0) == pytest.approx(1.6)
    # Once the buffer starts there, that sentence end is behind it.
    assert policy.trim_point(1.6, 5.0, max_buffer_seconds=10.0) is None


def test_prompt_holds_only_confirmed_text_whose_audio_is_before_the_buffer() -> None:
    policy = LocalAgreement()
    policy.insert(spoken("Hello world. How are"), 0.0)
    policy.insert(spoken("Hello world. How are you"), 0.0)
    assert policy.prompt(0.0) == ""  # all of it is still in the buffer and will be heard again
    assert policy.prompt(0.8) == "Hello world."
    assert policy.prompt(0.8, max_chars=8) == "world."  # cut at a word boundary
    assert policy.prompt(1.6) == "Hello world. How are"


# --- whole-session properties -----------------------------------------------------------------------------

_RANDOM_WORD_TEXTS = [
    " Hello",
    " hello,",
    "  spaced",
    "\nnewline",
    "-known",
    "世界",
    "。",
    " ",
    "",
    "\t",
    " world.",
    " Straße",
    " ÄPFEL!",
    " «Привет»",
    "元気",
    " no",
    " no",
    " the",
]


def test_text_is_the_concatenation_of_the_deltas_and_never_has_doubled_spaces() -> None:
    rng = random.Random(20230101)
    for _ in range(300):
        policy = LocalAgreement()
        deltas: list[str] = []
        offset = 0.0
        for _ in range(rng.randint(1, 25)):
            texts = [rng.choice(_RANDOM_WORD_TEXTS) for _ in range(rng.randint(0, 8))]
            starts = sorted(rng.uniform(0.0, 6.0) for _ in texts)
            hypothesis = [
                Word(start=start, end=start + rng.uniform(0.0, 0.6), word=text, probability=1.0)
                for text, start in zip(texts, starts, strict=True)
            ]
            before = policy.confirmed_text
            confirmation = policy.insert(hypothesis, offset)
            deltas.append(confirmation.text)
            assert policy.confirmed_text == before + confirmation.text
            assert confirmation.text == join_words(confirmation.words, before)
            for text in (policy.confirmed_text, policy.confirmed_text + policy.unconfirmed_text):
                assert "  " not in text
                assert text == text.strip()
            cut = policy.trim_point(offset, offset + 6.0, max_buffer_seconds=rng.choice([1.0, 30.0]))
            if cut is not None and rng.random() < 0.7:
                offset = cut
            assert policy.prompt(offset) in policy.confirmed_text
        deltas.append(policy.flush().text)
        assert "".join(deltas) == policy.confirmed_text
        assert "  " not in policy.confirmed_text


_LATIN_VOCABULARY = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "kilo"]
_JAPANESE_VOCABULARY = ["今日", "は", "天気", "が", "いい", "です", "ね", "明日", "雨", "かも", "しれ", "ない"]


def _spoken_truth(rng: random.Random, vocabulary: list[str], *, spaced: bool, count: int) -> list[Word]:
    """A made-up utterance with sentence ends and pauses, in which no run of up to five words repeats right
    after itself (so a genuine repeat is never mistaken for Whisper repeating confirmed words)."""
    words: list[Word] = []
    keys: list[str] = []
    clock = 0.0
    sentence_start = True
    while len(words) < count:
        token = rng.choice(vocabulary)
        candidate = [*keys, normalize_word(token)]
        if any(candidate[-n:] == candidate[-2 * n : -n] for n in range(1, 6)):
            continue
        ends = rng.random() < 0.15
        text = (token.capitalize() if sentence_start else token) + (("." if spaced else "。") if ends else "")
        duration = rng.uniform(0.15, 0.5)
        words.append(Word(start=clock, end=clock + duration, word=(" " if spaced else "") + text, probability=1.0))
        keys.append(normalize_word(text))
        clock += duration + (rng.uniform(0.3, 1.0) if ends else rng.uniform(0.0, 0.2))
        sentence_start = ends
    return words


def _whisper_like_hypothesis(
    truth: list[Word], policy: LocalAgreement, offset: float, now: float, final: bool, rng: random.Random
) -> list[Word]:
    """What Whisper would return for the buffer [offset, now]: the words heard there with jittered times,
    relative to the buffer; a garbled last word while speech is still coming in; and, after a cut at the
    confirmed end, sometimes the last confirmed words again, squeezed onto the buffer start."""
    hypothesis: list[Word] = []
    for word in truth:
        if (word.start + word.end) / 2 < offset or word.start >= now:
            continue
        start = max(word.start + rng.uniform(-0.03, 0.03), offset)
        end = max(min(word.end + rng.uniform(-0.03, 0.03), now), start)
        text = word.word
        if word.end > now and not final:
            text = f" zq{rng.randrange(10**9)}"  # half-heard
        hypothesis.append(Word(start=start - offset, end=end - offset, word=text, probability=1.0))
    if hypothesis and not final and rng.random() < 0.4:
        unstable = hypothesis[-1]
        hypothesis[-1] = Word(unstable.start, unstable.end, f" zq{rng.randrange(10**9)}", 1.0)
    confirmed_end = policy.last_confirmed_end
    if confirmed_end is not None and offset >= confirmed_end - 0.1 and rng.random() < 0.5:
        cut_off = [word for word in truth if (word.start + word.end) / 2 < offset]
        repeated = cut_off[-rng.randint(1, 3) :]
        echo = [Word(0.02 * i, 0.02 * (i + 1), word.word, 1.0) for i, word in enumerate(repeated)]
        hypothesis = echo + hypothesis
    return hypothesis


@pytest.mark.parametrize("spaced", [True, False], ids=["latin", "japanese"])
@pytest.mark.parametrize("seed", range(12))
def test_a_simulated_session_confirms_exactly_what_was_said(seed: int, spaced: bool) -> None:
    rng = random.Random(seed)
    truth = _spoken_truth(rng, _LATIN_VOCABULARY if spaced else _JAPANESE_VOCABULARY, spaced=spaced, count=120)
    policy = LocalAgreement()
    max_buffer_seconds = 6.0
    offset = now = 0.0
    deltas: list[str] = []
    longest_buffer = 0.0
    while now < truth[-1].end:
        now = min(now + 0.5, truth[-1].end)
        final = now >= truth[-1].end
        before = policy.confirmed_text
        deltas.append(policy.insert(_whisper_like_hypothesis(truth, policy, offset, now, final, rng), offset).text)
        assert policy.confirmed_text.startswith(before)
        longest_buffer = max(longest_buffer, now - offset)
        cut = policy.trim_point(offset, now, max_buffer_seconds)
        if cut is not None:
            offset = cut
    deltas.append(policy.flush().text)

    assert policy.confirmed_text == join_words(truth)
    assert "".join(deltas) == policy.confirmed_text
    assert longest_buffer < max_buffer_seconds + 2.0


def test_a_cut_stays_clear_of_the_next_words_start() -> None:
    # Word edges are approximate: a cut right at a confirmed word's end can take the first sound of the next
    # word with it ("the software" cut after "the" was heard as "twitter" from then on).
    policy = LocalAgreement(cut_margin=0.25)
    hypothesis = timed((" of", 0.0, 0.3), (" the", 0.3, 1.0), (" software.", 1.0, 1.5), (" And", 2.5, 2.8))
    policy.insert(hypothesis[:3], 0.0)
    policy.insert(hypothesis, 0.0)
    assert policy.confirmed_text == "of the software."
    # The sentence ends 1.0 s before "And": the cut is at the sentence's end.
    assert policy.trim_point(0.0, 3.0, max_buffer_seconds=30.0) == pytest.approx(1.5)

    policy = LocalAgreement(cut_margin=0.25)
    policy.insert(hypothesis[:2], 0.0)
    policy.insert(hypothesis[:3], 0.0)
    assert policy.confirmed_text == "of the"
    # At the buffer bound, after "the": 0.25 s before "software." starts, not at "the"'s end.
    assert policy.trim_point(0.0, 31.0, max_buffer_seconds=30.0) == pytest.approx(0.75)


def test_a_confirmed_word_timed_over_the_next_one_does_not_hide_it() -> None:
    # Near a buffer's end Whisper squeezes the last words: "not" was timed over 1.4 s, through "what".
    policy = LocalAgreement(max_word_seconds=1.0)
    policy.insert(timed((" ask", 0.0, 0.5), (" not", 0.5, 1.9), (" what", 1.9, 2.0)), 0.0)
    policy.insert(timed((" ask", 0.0, 0.5), (" not", 0.5, 1.9), (" your", 1.9, 2.3)), 0.0)
    assert policy.confirmed_text == "ask not"
    assert policy.last_confirmed_end == pytest.approx(1.5)
    # The next hearing times "what" properly, 1.3-1.8: its midpoint is inside the stretched "not", and it
    # would be dropped as already confirmed were "not" counted at its full length.
    later = timed((" ask", 0.0, 0.5), (" not", 0.5, 1.0), (" what", 1.3, 1.8), (" your", 1.8, 2.2))
    policy.insert(later, 0.0)
    policy.insert(later, 0.0)
    assert policy.confirmed_text == "ask not what your"


def test_a_word_confirmed_at_one_instant_is_not_confirmed_again_when_heard_there_again() -> None:
    # tiny.en timed "following" at 4.6-4.6: its midpoint is the confirmed end, where the time rule keeps words.
    policy = LocalAgreement()
    first = timed((" the", 4.2, 4.6), (" following", 4.6, 4.6), (" condition.", 4.6, 4.8))
    policy.insert(first, 0.0)
    policy.insert(timed((" the", 4.2, 4.6), (" following", 4.6, 4.6), (" conditions.", 4.6, 5.0)), 0.0)
    assert policy.confirmed_text == "the following"
    again = timed((" the", 4.2, 4.6), (" following", 4.6, 4.6), (" conditions,", 4.6, 5.1), (" the", 5.6, 5.7))
    policy.insert(again, 0.0)
    policy.insert(again, 0.0)
    assert policy.confirmed_text == "the following conditions, the"
