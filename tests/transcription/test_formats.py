"""Unit tests of the transcription response formats: text joining, subtitles, verbose_json, SSE events."""

from __future__ import annotations

import json

import pytest
import srt
import webvtt
from faster_whisper.transcribe import Segment, Word

from speaches import sse
from speaches.errors import NotFoundError
from speaches.transcription import formats
from speaches.transcription.protocol import TextDeltaEvent


def segment(start: float, end: float, text: str, words: list[Word] | None = None, seek: int = 0) -> Segment:
    return Segment(
        id=1,
        seek=seek,
        start=start,
        end=end,
        text=text,
        tokens=[50364, 1000, 50464],
        avg_logprob=-0.25,
        compression_ratio=1.2,
        no_speech_prob=0.01,
        words=words,
        temperature=0.0,
    )


JFK_SEGMENTS = [
    segment(0.0, 8.06, " And so, my fellow Americans ask not what your country can do for you"),
    segment(8.06, 11.0, " ask what you can do for your country."),
]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ([" Hello world.", " How are you?"], "Hello world. How are you?"),
        (["  leading", " and trailing  ", " words "], "leading and trailing words"),
        (["no", "space ", "before"], "nospace before"),
        ([" ", " first", "", "   ", " second"], "first second"),
        (["你好", "世界"], "你好世界"),
        ([], ""),
        (["   "], ""),
    ],
)
def test_text_joiner_deltas_concatenate_to_the_text(texts: list[str], expected: str) -> None:
    joiner = formats.TextJoiner()
    deltas = [joiner.add(text) for text in texts]
    assert joiner.text == expected
    assert "".join(deltas) == joiner.text
    assert formats.transcript_text([segment(0, 1, text) for text in texts]) == expected


def test_text_format_is_the_transcript_and_a_newline() -> None:
    assert formats.to_text(JFK_SEGMENTS) == (
        "And so, my fellow Americans ask not what your country can do for you ask what you can do for your country.\n"
    )
    assert formats.to_text([]) == ""


def test_json_carries_text_and_duration_usage() -> None:
    body = formats.to_json(JFK_SEGMENTS, 11.0).model_dump(exclude_none=True)  # as the router sends it
    assert body == {"text": formats.transcript_text(JFK_SEGMENTS), "usage": {"type": "duration", "seconds": 11.0}}


@pytest.mark.parametrize(
    ("seconds", "srt_stamp", "vtt_stamp"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (1.5, "00:00:01,500", "00:00:01.500"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (3661.042, "01:01:01,042", "01:01:01.042"),
        (-0.2, "00:00:00,000", "00:00:00.000"),
        (100 * 3600 + 1, "100:00:01,000", "100:00:01.000"),
    ],
)
def test_timestamps(seconds: float, srt_stamp: str, vtt_stamp: str) -> None:
    assert formats.format_timestamp(seconds, decimal_marker=",") == srt_stamp
    assert formats.format_timestamp(seconds, decimal_marker=".") == vtt_stamp


def test_srt_parses_with_a_standard_parser() -> None:
    subtitles = list(srt.parse(formats.to_srt(JFK_SEGMENTS)))
    assert [subtitle.index for subtitle in subtitles] == [1, 2]
    assert [subtitle.start.total_seconds() for subtitle in subtitles] == [0.0, 8.06]
    assert [subtitle.end.total_seconds() for subtitle in subtitles] == [8.06, 11.0]
    assert subtitles[1].content == "ask what you can do for your country."


def test_vtt_parses_with_a_standard_parser() -> None:
    cues = list(webvtt.from_string(formats.to_vtt(JFK_SEGMENTS)))
    assert [(cue.start, cue.end) for cue in cues] == [
        ("00:00:00.000", "00:00:08.060"),
        ("00:00:08.060", "00:00:11.000"),
    ]
    assert cues[0].text == "And so, my fellow Americans ask not what your country can do for you"


def test_subtitles_survive_awkward_segment_text() -> None:
    awkward = [
        segment(0.0, 1.0, " first line\n\nsecond --> line"),
        segment(1.0, 2.0, "   "),  # no text: no cue
        segment(3.0, 2.5, " ends before it starts"),
    ]
    subtitles = list(srt.parse(formats.to_srt(awkward)))
    assert [subtitle.content for subtitle in subtitles] == ["first line second -> line", "ends before it starts"]
    assert subtitles[1].end >= subtitles[1].start
    cues = list(webvtt.from_string(formats.to_vtt(awkward)))
    assert [cue.text for cue in cues] == ["first line second -> line", "ends before it starts"]


def test_subtitles_of_silence_are_valid_and_empty() -> None:
    assert list(srt.parse(formats.to_srt([]))) == []
    assert list(webvtt.from_string(formats.to_vtt([]))) == []


def test_verbose_json_has_openai_shape() -> None:
    words = [Word(0.0, 0.4, " And", 0.9), Word(0.4, 0.7, " so,", 0.8)]
    body = formats.to_verbose_json(
        [segment(0.0, 0.7, " And so,", words), segment(1.0, 2.0, " more", [Word(1.0, 2.0, " more", 0.9)], seek=100)],
        task="transcribe",
        language="en",
        duration=2.5,
        granularities={"segment", "word"},
    ).model_dump(exclude_none=True)
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == 2.5
    assert body["text"] == "And so, more"
    assert [item["id"] for item in body["segments"]] == [0, 1]
    assert set(body["segments"][0]) == {
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    }
    assert body["segments"][1]["seek"] == 100
    assert body["words"] == [
        {"word": "And", "start": 0.0, "end": 0.4},
        {"word": "so,", "start": 0.4, "end": 0.7},
        {"word": "more", "start": 1.0, "end": 2.0},
    ]


def test_verbose_json_lists_only_the_requested_granularities() -> None:
    only_segments = formats.to_verbose_json(
        JFK_SEGMENTS, task="transcribe", language="de", duration=11, granularities={"segment"}
    ).model_dump(exclude_none=True)
    assert "words" not in only_segments
    assert only_segments["language"] == "german"
    only_words = formats.to_verbose_json(
        JFK_SEGMENTS, task="transcribe", language="en", duration=11, granularities={"word"}
    ).model_dump(exclude_none=True)
    assert "segments" not in only_words
    assert only_words["words"] == []


def test_translation_reports_english_the_language_of_its_text() -> None:
    body = formats.to_verbose_json(
        JFK_SEGMENTS, task="translate", language="fr", duration=11, granularities={"segment"}
    )
    assert body.language == "english"
    assert body.task == "translate"


def test_sse_events_are_single_data_lines() -> None:
    event = sse.sse_event(TextDeltaEvent(delta="two\nlines"))
    assert event.startswith("data: ")
    assert event.endswith("\n\n")
    assert event.count("\n") == 2  # JSON escapes the newline inside the delta
    assert json.loads(event.removeprefix("data: ")) == {"type": "transcript.text.delta", "delta": "two\nlines"}
    error = sse.sse_error(NotFoundError("gone", param="model"))
    assert json.loads(error.removeprefix("data: "))["error"] == {
        "message": "gone",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
