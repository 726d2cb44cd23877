"""Fast unit tests of the live pieces that need no model: the PCM buffer and the wire messages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from faster_whisper.transcribe import Word

from speaches.audio.decoding import decode_audio
from speaches.errors import InvalidRequestError
from speaches.live import protocol
from speaches.live.hearing import MAX_WORD_SECONDS, UNHEARD_TAIL_SECONDS, max_step_tokens, unheard_speech
from speaches.live.local_agreement import LocalAgreement
from speaches.live.pcm_buffer import SAMPLE_RATE, PcmBuffer
from speaches.live.session import LiveUpdate
from speaches.live.socket import close_reason, utf8_size
from tests.helpers import AUDIO_DIR


def pcm(values: list[int] | np.ndarray) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def test_buffer_converts_int16_to_float() -> None:
    buffer = PcmBuffer()
    buffer.append(pcm([0, 16384, -32768, 32767]))
    assert buffer.samples().dtype == np.float32
    np.testing.assert_allclose(buffer.samples(), [0.0, 0.5, -1.0, 32767 / 32768])
    assert (buffer.start, buffer.end, len(buffer)) == (0, 4, 4)


def test_a_turn_that_ends_in_silence_drops_the_words_whisper_invents_there() -> None:
    """At a VAD's end of speech (and at a pause) a hypothesis' invented tail is not taken on its say: words that
    begin where the VAD heard silence, and a last word Whisper itself doubts and gives no duration ("Thank")."""
    from speaches.live.session import _before_invented_tail

    heard = [
        Word(start=0.0, end=0.4, word=" Ask", probability=0.9),
        Word(start=0.4, end=0.9, word=" country.", probability=0.99),
        Word(start=0.9, end=0.9, word=" Thank", probability=0.03),
        Word(start=0.9, end=1.2, word=" you.", probability=0.98),
    ]
    assert _before_invented_tail(tuple(heard), 2.0) == 0.9
    assert _before_invented_tail(tuple(heard[:2]), 2.0) == 2.0  # sure, whole words stand
    policy = LocalAgreement()
    policy.insert(heard, 0.0)
    assert policy.flush(speech_until=_before_invented_tail(policy.unconfirmed, 2.0)).text == "Ask country."
    policy = LocalAgreement()
    policy.insert(heard[:2], 0.0)
    assert policy.flush(speech_until=0.3).text == "Ask"  # "country." begins after the speech ended
    # A stream that just ends, with no VAD to say where its speech did: the invented tail still goes.
    policy = LocalAgreement()
    policy.insert(heard, 0.0)
    assert policy.flush(speech_until=_before_invented_tail(policy.unconfirmed, math.inf)).text == "Ask country."


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
    # Within twice the most it held (13 s: 3 s kept plus 10 s until the next cut), as at the start of the hour.
    assert buffer.capacity <= max(initial_capacity, 2 * 13.1 * SAMPLE_RATE)


def update(delta: str, text: str, words: tuple[Word, ...] = ()) -> LiveUpdate:
    return LiveUpdate(delta=delta, text=text, unconfirmed=" tail", words=words, language="en")


def test_update_messages_by_format() -> None:
    words = (Word(start=1.23456, end=1.5, word=" Hello,", probability=0.9),)
    # Only what changed: the whole transcript is never resent, so a message's size does not grow with the session.
    assert protocol.update_message(update(" Hello,", "Oh. Hello,", words), "json") == {
        "type": "transcript.text.delta",
        "delta": " Hello,",
        "unconfirmed": " tail",
    }
    verbose = protocol.update_message(update(" Hello,", "Oh. Hello,", words), "verbose_json")
    assert verbose is not None
    assert not isinstance(verbose, str)
    assert "text" not in verbose
    assert verbose["words"] == [{"word": "Hello,", "start": 1.235, "end": 1.5}]
    assert verbose["language"] == "en"
    assert protocol.update_message(update(" Hello,", "Oh. Hello,"), "text") == " Hello,"
    # A change of the tentative tail alone is news in JSON, not in text mode.
    assert protocol.update_message(update("", "Oh."), "text") is None
    assert protocol.done_message("All.", "text") is None
    assert protocol.done_message("All.", "json") == {"type": "transcript.text.done", "text": "All."}
    assert protocol.transcript_message("All", " so") == {"type": "transcript.text", "text": "All", "unconfirmed": " so"}


def test_commands() -> None:
    assert protocol.parse_command('{"type": "end"}') == protocol.END_COMMAND
    assert protocol.parse_command('{"type": "transcript"}') == protocol.TRANSCRIPT_COMMAND
    nested = "[" * 100_000  # json.loads raises RecursionError on it, not ValueError
    for text in ["end", '{"type": "END"}', "[]", "null", "{", '{"type": ["end"]}', '{"type": {}}', nested]:
        with pytest.raises(InvalidRequestError) as refusal:
            protocol.parse_command(text)
        body = protocol.error_message(refusal.value)
        assert body["type"] == "error"
        assert body["error"]["code"] == "unknown_command"
        json.dumps(body)


def test_buffer_takes_float_samples_and_reads_up_to_a_position() -> None:
    buffer = PcmBuffer(initial_seconds=0.001)
    buffer.append(pcm([16384]))
    buffer.append_samples(np.array([0.25, -0.25], dtype=np.float32))
    np.testing.assert_allclose(buffer.samples(), [0.5, 0.25, -0.25])
    np.testing.assert_allclose(buffer.samples(until=2), [0.5, 0.25])
    buffer.trim_to(1)
    np.testing.assert_allclose(buffer.samples(until=2), [0.25])
    assert len(buffer.samples(until=0)) == 0
    buffer.clear()
    assert (buffer.start, buffer.end) == (3, 3)


def test_step_token_bound_fits_whisper_with_a_full_prompt() -> None:
    # faster-whisper refuses prompt + max_new_tokens over 448; a 200-character prompt is under 100 tokens.
    assert max_step_tokens(25.0) + 100 <= 448
    assert max_step_tokens(1.0) >= 32


def word(text: str, start: float, end: float) -> Word:
    return Word(start=start, end=end, word=text, probability=0.9)


def test_force_confirm_takes_the_older_tentative_words_and_cuts_before_the_rest() -> None:
    policy = LocalAgreement()
    policy.insert([word(" one", 0.0, 1.0), word(" two", 6.0, 7.0), word(" three", 7.5, 9.0)], 0.0)
    assert policy.confirmed_text == ""
    confirmation, cut = policy.force_confirm(7.0)
    assert confirmation.text == "one two"
    assert policy.confirmed_text == "one two"
    # "three" stays tentative, and the cut falls before it starts, not inside it.
    assert cut == 7.0
    assert [w.word for w in policy.unconfirmed] == [" three"]
    # A word straddling the point (midpoint 8.25) is not forced, and the cut stops at its start.
    confirmation, cut = policy.force_confirm(8.0)
    assert (confirmation.text, cut) == ("", 7.5)
    confirmation, cut = policy.force_confirm(9.0)
    assert (confirmation.text, cut) == (" three", 9.0)
    assert policy.confirmed_text == "one two three"


def test_close_reason_fits_a_close_frame() -> None:
    assert close_reason("short") == "short"
    long = "é" * 200  # two bytes each
    reason = close_reason(long)
    assert len(reason.encode()) <= 123
    assert reason.endswith("...")


def test_frame_size_is_counted_in_utf8_bytes() -> None:
    assert utf8_size("end") == 3
    assert utf8_size("é") == 2
    assert utf8_size("世界") == 6


def _evenly(start: float, end: float) -> list[Word]:
    """A word every half second from `start` to `end`, as a hypothesis that heard everything there."""
    return [word("x", t, t + 0.4) for t in np.arange(start, end, 0.5)]


def test_speech_the_words_cover_is_not_unheard() -> None:
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    assert unheard_speech(jfk, _evenly(0.0, 11.0)) == []


def test_speech_after_the_last_word_is_unheard_but_not_the_tail_still_arriving() -> None:
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")  # speech to about 10.5 s of 11 s
    stretches = unheard_speech(jfk, _evenly(0.0, 4.0))
    assert stretches, "seven seconds of speech with no word"
    start, end = stretches[0]
    assert 4.0 <= start <= 5.0, stretches
    assert end <= len(jfk) / SAMPLE_RATE - UNHEARD_TAIL_SECONDS
    assert unheard_speech(jfk, _evenly(0.0, 9.0)) == [], "the last 1.5 s may still be arriving"


def test_a_word_stretched_over_skipped_speech_covers_only_a_word_s_length() -> None:
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    # How Whisper's word timing looks when it jumped: the word before the jump spans the skipped audio.
    stretched = [*_evenly(0.0, 2.0), word(" old", 2.0, 9.5)]
    stretches = unheard_speech(jfk, stretched)
    assert stretches, "the stretched word hid seven seconds of speech"
    assert stretches[0][0] <= 2.0 + MAX_WORD_SECONDS + 0.5, stretches


def test_silence_without_words_is_not_unheard_speech() -> None:
    assert unheard_speech(np.zeros(10 * SAMPLE_RATE, dtype=np.float32), []) == []


def test_words_without_speech_are_dropped_from_a_hearing() -> None:
    from faster_whisper.transcribe import Word

    from speaches.live.hearing import spoken_words, untimed_runs

    def word(text: str, start: float, end: float) -> Word:
        return Word(start, end, text, 0.9)

    # tiny.en's loop on a 2.2 s buffer: the words, then dots at one instant; and a sentence written twice,
    # the second time with no audio of its own.
    dots = [word(" for", 2.0, 2.1), word(" you.", 2.1, 2.2), *[word(" .", 2.2, 2.2)] * 6]
    assert [w.word for w in spoken_words(dots)] == [" for", " you."]
    twice = [word(" turn", 0.7, 1.2), word(" on", 1.2, 1.4), word(" the", 1.4, 1.6), word(" lamp.", 1.6, 2.2)]
    twice += [word(text, 2.2, 2.2) for text in (" turn", " on", " the", " lamp.")]
    assert untimed_runs(twice) == [(4, 8)]
    assert [w.word for w in spoken_words(twice)] == [" turn", " on", " the", " lamp."]
    # Fast speech can give a word or three no duration; that is not a run.
    quick = [word(" a", 0.0, 0.0), word(" b", 0.0, 0.0), word(" c", 0.0, 0.0), word(" dee", 0.0, 0.3)]
    assert spoken_words(quick) == quick
    # A lone dash between words has no letters: nothing to say.
    assert [w.word for w in spoken_words([word(" above", 0.0, 0.3), word("-", 0.3, 0.3)])] == [" above"]
