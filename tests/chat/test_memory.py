"""The conversation memory: spoken answers by id and heard audio by digest, bounded in size and age."""

from __future__ import annotations

from speaches.chat.memory import RETENTION_SECONDS, ConversationMemory, TextMemory


def test_answers_are_found_by_their_id_until_they_expire() -> None:
    memory = ConversationMemory()
    audio_id = memory.new_audio_id()
    assert audio_id.startswith("audio_")
    assert audio_id != memory.new_audio_id()
    expires_at = memory.remember_answer(audio_id, "Hello.")
    assert memory.answer_transcript(audio_id) == "Hello."
    assert memory.answers.get(audio_id, now=expires_at - 1) == "Hello."
    assert memory.answers.get(audio_id, now=expires_at + 1) is None


def test_heard_audio_is_found_by_its_bytes() -> None:
    memory = ConversationMemory()
    memory.remember_heard("UklGRg==", "turn on the lamp")
    assert memory.heard_transcript("UklGRg==") == "turn on the lamp"
    assert memory.heard_transcript("UklGRh==") is None


def test_the_oldest_go_first_when_full() -> None:
    memory = TextMemory(max_entries=3, max_characters=100)
    for number in range(5):
        memory.put(f"k{number}", "x", now=1000)
    assert len(memory) == 3
    assert memory.get("k0", now=1000) is None
    assert memory.get("k4", now=1000) == "x"
    memory.put("big", "y" * 100, now=1000)
    assert memory.get("big", now=1000) == "y" * 100
    assert memory.get("k4", now=1000) is None  # squeezed out by characters
    memory.put("huge", "z" * 101, now=1000)  # longer than the whole memory: not kept, nothing evicted
    assert memory.get("huge", now=1000) is None
    assert memory.get("big", now=1000) == "y" * 100


def test_expired_entries_are_dropped_as_time_passes() -> None:
    memory = TextMemory()
    memory.put("old", "a", now=0)
    memory.put("new", "b", now=RETENTION_SECONDS / 2)
    memory.put("newer", "c", now=RETENTION_SECONDS + 1)
    assert len(memory) == 2
    assert memory.get("new", now=RETENTION_SECONDS + 1) == "b"
