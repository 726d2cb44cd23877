"""Cutting an LLM's streamed text into sentences to speak, and making written text sayable.

Speech for a streamed answer starts as soon as its first sentence is complete, so the cut must be
made from a prefix of the text: a sentence ends at `.`, `!`, `?` or `…` (and any closing quotes or
brackets) once whitespace follows, or at a line break. "Dr. Smith", "e.g. this" and "1. First" are
not cuts. A sentence that runs on past `MAX_SENTENCE_CHARS` is cut at its last comma or space, so
speech never waits for a very long sentence to end. With `quick_start`, the first piece of a text
already ends at its first clause mark (`,` `;` `:`) once a few words precede it: a short first piece
is spoken sooner, and the first audio is what a listener waits for.
"""

from __future__ import annotations

import re

MAX_SENTENCE_CHARS = 250
QUICK_START_CHARS = 8
"""The least a quick first piece holds (letters and marks, not spaces): "You said:" but not "Well,"."""
_CLAUSE_MARKS = ",;:"
_CLOSERS = "\"')]}”’»"
_ENDS = ".!?…"
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "approx", "fig", "inc", "ltd"}
)


def has_words(text: str) -> bool:
    return any(char.isalnum() for char in text)


class SentenceSplitter:
    """Feed text as it streams; take back each sentence once it is complete, and the rest at the end."""

    def __init__(self, max_chars: int = MAX_SENTENCE_CHARS, *, quick_start: bool = False) -> None:
        self.max_chars = max_chars
        self._quick = quick_start
        self._pending = ""

    def feed(self, text: str) -> list[str]:
        """The sentences `text` completes, as written: with the whitespace before each, so that everything
        `feed` and `flush` return, put together, is exactly the text fed."""
        self._pending += text
        sentences: list[str] = []
        while (cut := self._next_cut()) is not None:
            sentence, self._pending = self._pending[:cut], self._pending[cut:]
            sentences.append(sentence)
            self._quick = False
        return sentences

    def flush(self) -> str:
        """The rest, at the end of the text."""
        rest, self._pending = self._pending, ""
        return rest

    def _next_cut(self) -> int | None:
        text = self._pending
        for index, char in enumerate(text):
            if char == "\n":
                if has_words(text[:index]):
                    return index + 1
            elif char in _CLAUSE_MARKS and self._quick:
                followed_by_space = index + 1 < len(text) and text[index + 1].isspace()
                if followed_by_space and len("".join(text[: index + 1].split())) >= QUICK_START_CHARS:
                    return index + 1
            elif char in _ENDS:
                end = index + 1
                while end < len(text) and (text[end] in _CLOSERS or text[end] in _ENDS):
                    end += 1
                if end >= len(text):
                    break  # what follows decides; wait for it
                if text[end].isspace() and self._ends_sentence(text[:end]):
                    return end
        if len(text) > self.max_chars:
            return _run_on_cut(text, self.max_chars)
        return None

    @staticmethod
    def _ends_sentence(candidate: str) -> bool:
        stripped = candidate.rstrip(_CLOSERS)
        if not has_words(stripped):
            return False
        if stripped.endswith("."):
            last_word = stripped[:-1].rsplit(None, 1)[-1].lower() if stripped[:-1].strip() else ""
            last_word = last_word.lstrip("(\"'“‘«")
            if last_word in _ABBREVIATIONS:
                return False
            if len(last_word) == 1 and last_word.isalpha():
                return False  # an initial: "J. R. R. Tolkien"
            if last_word.isdigit() and not has_words(stripped[: -len(last_word) - 1]):
                return False  # a list number at the start: "1. First"
        return True


def _run_on_cut(text: str, limit: int) -> int:
    head = text[:limit]
    for marks in (",;:", " "):
        cut = max(head.rfind(mark) for mark in marks)
        if cut > limit // 2:
            return cut + 1
    return limit


_FENCE = re.compile(r"^\s*(```|~~~).*$", re.MULTILINE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_BULLET = re.compile(r"^\s*[-*+•]\s+", re.MULTILINE)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|~~|`+)")


def spoken_text(text: str) -> str:
    """`text` without the markdown an LLM writes (emphasis, headings, bullets, code marks, link targets),
    which a voice would otherwise read out or stumble over."""
    text = _FENCE.sub("", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub("", text)
    return " ".join(text.split())
