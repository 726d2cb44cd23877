"""Cut text that arrives piece by piece (an LLM's reply, token by token) into sentences to speak.

Streaming synthesis speaks each sentence as soon as it is complete, so the first words play while
the rest of the reply is still being written. A sentence ends at `.`, `!`, `?` or `…` followed by
whitespace (so `3.5` and `example.com` stay whole), at the CJK marks `。！？` without any, or at a line
break. A piece that grows past `max_chars` without an end is cut at its last space, so memory and
the length of one synthesis stay bounded whatever the client sends. Pure and synchronous.
"""

from __future__ import annotations

import re

# An end mark (and any closing quotes or brackets after it), then whitespace; or a CJK end mark; or a
# line break. The whitespace stays with the rest of the text.
_SENTENCE_END = re.compile(r"""[.!?…]+["'”’»)\]]*(?=\s)|[。！？]+["'”’»)\]]*|\n""")
# Abbreviations whose period does not end a sentence ("Dr. Smith"): a short word right before it.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx", "mt", "ft"}
)


class SentenceSplitter:
    """Feed text with :meth:`add`, which returns the sentences it completed; :meth:`finish` returns the rest."""

    def __init__(self, max_chars: int = 400) -> None:
        if max_chars < 2:
            raise ValueError("max_chars must be at least 2")
        self.max_chars = max_chars
        self._pending = ""

    def add(self, text: str) -> list[str]:
        self._pending += text
        sentences: list[str] = []
        start = 0
        for match in _SENTENCE_END.finditer(self._pending):
            end = match.end()
            if match.group().startswith(".") and self._ends_in_abbreviation(self._pending[start : match.start()]):
                continue
            sentences.extend(self._bounded(self._pending[start:end]))
            start = end
        self._pending = self._pending[start:]
        while len(self._pending) > self.max_chars:
            cut = self._cut_point(self._pending)
            sentences.extend(self._bounded(self._pending[:cut]))
            self._pending = self._pending[cut:]
        return [sentence for sentence in sentences if sentence]

    def finish(self) -> str:
        """The text after the last complete sentence (possibly empty); the splitter is empty afterwards."""
        rest, self._pending = self._pending.strip(), ""
        return rest

    @property
    def pending_chars(self) -> int:
        return len(self._pending)

    def _bounded(self, sentence: str) -> list[str]:
        """One finished sentence, in pieces of at most `max_chars`, stripped."""
        pieces: list[str] = []
        while len(sentence) > self.max_chars:
            cut = self._cut_point(sentence)
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:]
        pieces.append(sentence.strip())
        return [piece for piece in pieces if piece]

    def _cut_point(self, text: str) -> int:
        """Where to cut over-long text: after the last space within `max_chars`, else at `max_chars`."""
        space = text.rfind(" ", 1, self.max_chars + 1)
        return space + 1 if space > 0 else self.max_chars

    @staticmethod
    def _ends_in_abbreviation(text: str) -> bool:
        words = text.split()
        return bool(words) and words[-1].lower().lstrip("(\"'") in _ABBREVIATIONS


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """All the sentences of a complete text, in order."""
    splitter = SentenceSplitter(max_chars)
    sentences = splitter.add(text)
    rest = splitter.finish()
    return [*sentences, rest] if rest else sentences
