"""Fast unit tests of the live pieces that need no model: the PCM buffer and the wire messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from faster_whisper.transcribe import Word

from speaches.errors import InvalidRequestError
from speaches.live import protocol
from speaches.live.session import SAMPLE_RATE, LiveUpdate, PcmBuffer


def pcm(values: list[int] | np.ndarray) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def test_buffer_converts_int16_to_float() -> None:
    buffer = PcmBuffer()
    buffer.append(pcm([0, 16384, -32768, 32767]))
    assert buffer.samples().dtype == np.float32
    np.testing.assert_allclose(buffer.samples(), [0.0, 0.5, -1.0, 32767 / 32768])
    assert (buffer.start, buffer.end, len(buffer)) == (0, 4, 4)


@pytest.mark.parametrize("frame_bytes", [1, 3, 7, 3201])
def test_buffer_joins_samples_split_across_frames(frame_bytes: int) -> None:
    values = np.random.default_rng(0).integers(-32768, 32767, 5000, dtype=np.int16)
    data = pcm(values)
    whole, split = PcmBuffer(), PcmBuffer()
    whole.append(data)
    for offset in range(0, len(data), frame_bytes):
        split.append(data[offset : offset + frame_bytes])
    np.testing.assert_array_equal(whole.samples(), split.samples())


def test_buffer_holds_a_half_sample_until_the_next_frame() -> None:
    buffer = PcmBuffer()
    buffer.append(b"\x00")
    assert len(buffer) == 0
    buffer.append(b"\x40")  # completes 0x4000 = 16384
    np.testing.assert_allclose(buffer.samples(), [0.5])


def test_trim_moves_the_start_and_clamps() -> None:
    buffer = PcmBuffer()
    buffer.append(pcm(range(100)))
    buffer.trim_to(40)
    assert (buffer.start, buffer.end) == (40, 100)
    np.testing.assert_allclose(buffer.samples()[:2] * 32768, [40, 41])
    buffer.trim_to(10)  # backwards: nothing happens
    assert buffer.start == 40
    buffer.trim_to(1000)  # past the end: empty, the timeline keeps its place
    assert (buffer.start, buffer.end, len(buffer)) == (100, 100, 0)
    buffer.append(pcm([7]))
    assert (buffer.start, buffer.end) == (100, 101)


def test_samples_view_is_stable_while_audio_keeps_arriving() -> None:
    buffer = PcmBuffer(initial_seconds=0.01)  # 160 samples: the appends below force several regrowths
    buffer.append(pcm(range(100)))
    snapshot = buffer.samples()
    expected = snapshot.copy()
    for start in range(100, 5000, 100):
        buffer.append(pcm(range(start, start + 100)))
        buffer.trim_to(buffer.end - 150)
    np.testing.assert_array_equal(snapshot, expected)
    with pytest.raises(ValueError, match="read-only"):
        snapshot[0] = 1.0


def test_buffer_memory_stays_bounded_over_an_hour() -> None:
    buffer = PcmBuffer()
    initial_capacity = buffer.capacity
    frame = pcm(np.zeros(SAMPLE_RATE // 10, dtype=np.int16))  # 100 ms
    for index in range(36_000):
        buffer.append(frame)
        if index % 100 == 99:  # every 10 s a sentence ends and the buffer is cut, keeping 3 s
            buffer.trim_to(buffer.end - 3 * SAMPLE_RATE)
    assert buffer.end == 3600 * SAMPLE_RATE
    assert len(buffer) == 3 * SAMPLE_RATE
    assert buffer.capacity == initial_capacity


def update(delta: str, text: str, words: tuple[Word, ...] = ()) -> LiveUpdate:
    return LiveUpdate(delta=delta, text=text, unconfirmed=" tail", words=words, language="en")


def test_update_messages_by_format() -> None:
    words = (Word(start=1.23456, end=1.5, word=" Hello,", probability=0.9),)
    assert protocol.update_message(update(" Hello,", "Oh. Hello,", words), "json") == {
        "type": "transcript.text.delta",
        "delta": " Hello,",
        "text": "Oh. Hello,",
        "unconfirmed": " tail",
    }
    verbose = protocol.update_message(update(" Hello,", "Oh. Hello,", words), "verbose_json")
    assert verbose is not None
    assert not isinstance(verbose, str)
    assert verbose["words"] == [{"word": "Hello,", "start": 1.235, "end": 1.5}]
    assert verbose["language"] == "en"
    assert protocol.update_message(update(" Hello,", "Oh. Hello,"), "text") == "Oh. Hello,"
    # A change of the tentative tail alone is news in JSON, not in text mode.
    assert protocol.update_message(update("", "Oh."), "text") is None
    assert protocol.done_message("All.", "text") == "All."
    assert protocol.done_message("All.", "json") == {"type": "transcript.text.done", "text": "All."}


def test_only_end_is_a_command() -> None:
    assert protocol.parse_command('{"type": "end"}') == protocol.END_COMMAND
    for text in ["end", '{"type": "END"}', "[]", "null", "{", '{"type": ["end"]}']:
        with pytest.raises(InvalidRequestError) as refusal:
            protocol.parse_command(text)
        body = protocol.error_message(refusal.value)
        assert body["type"] == "error"
        assert body["error"]["code"] == "unknown_command"
        json.dumps(body)


def test_close_reason_fits_a_close_frame() -> None:
    assert protocol.close_reason("short") == "short"
    long = "é" * 200  # two bytes each
    reason = protocol.close_reason(long)
    assert len(reason.encode()) <= 123
    assert reason.endswith("...")
