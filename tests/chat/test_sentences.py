"""Cutting streamed LLM text into sentences to speak, and the markdown a voice should not read."""

from __future__ import annotations

import pytest

from speaches.chat.sentences import MAX_SENTENCE_CHARS, SentenceSplitter, spoken_text


def split(pieces: list[str]) -> list[str]:
    splitter = SentenceSplitter()
    sentences = [sentence for piece in pieces for sentence in splitter.feed(piece)]
    rest = splitter.flush()
    return [*sentences, rest] if rest else sentences


def test_sentences_come_out_as_soon_as_the_next_character_shows_they_ended() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello there.") == []  # "there.5" could still follow
    assert splitter.feed(" How") == ["Hello there."]
    assert splitter.feed(" are you?!\nFine") == [" How are you?!"]
    assert splitter.flush() == "\nFine"


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Dr. Smith met Mr. Jones. They talked.", ["Dr. Smith met Mr. Jones.", " They talked."]),
        ("Pi is 3.14, e.g. roughly. Yes.", ["Pi is 3.14, e.g. roughly.", " Yes."]),
        ("J. R. R. Tolkien wrote it. Truly.", ["J. R. R. Tolkien wrote it.", " Truly."]),
        ("1. First item\n2. Second item", ["1. First item\n", "2. Second item"]),
        ('He said "stop." Then left.', ['He said "stop."', " Then left."]),
        ("Wait... what? No!", ["Wait...", " what?", " No!"]),
        ("The answer is no. Fine.", ["The answer is no.", " Fine."]),
        ("\n\nAfter a blank start. Next", ["\n\nAfter a blank start.", " Next"]),
    ],
)
def test_where_sentences_end(text: str, sentences: list[str]) -> None:
    assert split([text]) == sentences
    assert split(list(text)) == sentences  # streamed a character at a time, the cuts are the same


def test_everything_fed_comes_back_exactly() -> None:
    text = "One. Two!  Three?\n\n- four\nfive " * 20
    for size in (1, 3, 7, 50):
        assert "".join(split([text[i : i + size] for i in range(0, len(text), size)])) == text


def test_a_run_on_sentence_is_cut_at_a_comma_or_a_space() -> None:
    clause = "and then the story went on, "
    sentences = split([clause * 30])
    assert len(sentences) > 2
    assert all(len(sentence) <= MAX_SENTENCE_CHARS for sentence in sentences)
    assert all(sentence.endswith(",") for sentence in sentences[:-1])
    words = split(["word " * 200])
    assert all(len(sentence) <= MAX_SENTENCE_CHARS and sentence.endswith(" ") for sentence in words[:-1])


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("**Bold** and *italic* and `code`.", "Bold and italic and code."),
        ("## A heading\n- first\n* second", "A heading first second"),
        ("See [the docs](https://example.com/x) now.", "See the docs now."),
        ("```python\nprint(1)\n```", "print(1)"),
        ("~~old~~ new", "old new"),
    ],
)
def test_spoken_text_drops_markdown(written: str, said: str) -> None:
    assert spoken_text(written) == said


def test_quick_start_ends_the_first_piece_at_its_first_clause() -> None:
    splitter = SentenceSplitter(quick_start=True)
    assert splitter.feed("Well, that") == []  # too short to be worth a piece of its own
    assert splitter.feed(" is it: the lamp, the light. And, so") == ["Well, that is it:", " the lamp, the light."]
    assert splitter.flush() == " And, so"  # only the first piece is cut early
