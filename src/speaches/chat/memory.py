"""What a conversation may refer back to: spoken answers by audio id, and audio already transcribed.

A client continues a conversation by sending its history again. An assistant turn that was spoken
comes back as `{"role": "assistant", "audio": {"id": ...}}`: the LLM needs that answer's words, kept
here under the id. A user turn that was audio comes back as the same base64 again: its transcript is
kept under the digest of those bytes, so a ten-turn conversation is not transcribed ten times over.

Both are bounded in entries, total characters and age (`RETENTION_SECONDS`, which is also the
`expires_at` a spoken answer carries); the oldest go first.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

RETENTION_SECONDS = 3600
MAX_ENTRIES = 10_000
MAX_CHARACTERS = 8_000_000


@dataclass(frozen=True)
class Remembered:
    text: str
    expires_at: float


class TextMemory:
    """Texts by key with an expiry: insertion-ordered, so eviction and expiry both take from the front."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES, max_characters: int = MAX_CHARACTERS) -> None:
        self.max_entries = max_entries
        self.max_characters = max_characters
        self._entries: OrderedDict[str, Remembered] = OrderedDict()
        self._characters = 0

    def put(self, key: str, text: str, *, now: float | None = None) -> Remembered:
        now = time.time() if now is None else now
        self._drop(key)
        entry = Remembered(text, now + RETENTION_SECONDS)
        if len(text) > self.max_characters:
            return entry  # too long to keep: a later reference to it gets the "unknown id" error
        self._entries[key] = entry
        self._characters += len(text)
        self._expire(now)
        while len(self._entries) > self.max_entries or self._characters > self.max_characters:
            self._drop(next(iter(self._entries)))
        return entry

    def get(self, key: str, *, now: float | None = None) -> str | None:
        now = time.time() if now is None else now
        self._expire(now)
        entry = self._entries.get(key)
        return None if entry is None else entry.text

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            oldest_key, oldest = next(iter(self._entries.items()))
            if oldest.expires_at > now:
                return
            self._drop(oldest_key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._characters -= len(entry.text)


class ConversationMemory:
    def __init__(self) -> None:
        self.answers = TextMemory()
        self.heard = TextMemory()

    @staticmethod
    def new_audio_id() -> str:
        return f"audio_{secrets.token_hex(12)}"

    def remember_answer(self, audio_id: str, transcript: str) -> int:
        """Keep a spoken answer's words under its audio id; returns its `expires_at`."""
        return int(self.answers.put(audio_id, transcript).expires_at)

    def answer_transcript(self, audio_id: str) -> str | None:
        return self.answers.get(audio_id)

    def heard_transcript(self, audio_base64: str) -> str | None:
        return self.heard.get(_digest(audio_base64))

    def remember_heard(self, audio_base64: str, transcript: str) -> None:
        self.heard.put(_digest(audio_base64), transcript)


def _digest(audio_base64: str) -> str:
    return hashlib.sha256(audio_base64.encode("ascii", "replace")).hexdigest()
