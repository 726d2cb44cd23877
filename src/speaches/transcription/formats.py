"""faster-whisper segments -> every response format: text, json, verbose_json, srt, vtt and SSE events.

Pure functions of their inputs, no I/O. Segments are faster-whisper's own `Segment` dataclasses
(with timestamps already relative to the start of the upload).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from speaches.languages import language_name
from speaches.transcription.protocol import (
    DurationUsage,
    Logprob,
    Segment,
    Task,
    TimestampGranularity,
    TranscriptionJson,
    TranscriptionVerboseJson,
    Word,
)

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment as WhisperSegment


class TextJoiner:
    """Joins segment texts into one transcript, also as the deltas that build it.

    Whisper's segment texts start with a space (" And so ..."), except in languages written without
    spaces. The transcript is the trimmed texts, joined by one space where either side of a boundary
    had whitespace and by nothing otherwise; segments of only whitespace add nothing. The deltas
    concatenate to `text` exactly.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._trailing_space = False

    def add(self, segment_text: str) -> str:
        """Append a segment's text; returns the delta it adds to `text` (possibly empty)."""
        core = segment_text.strip()
        if not core:
            return ""
        spaced = bool(self._parts) and (self._trailing_space or segment_text[0].isspace())
        delta = f" {core}" if spaced else core
        self._trailing_space = segment_text[-1].isspace()
        self._parts.append(delta)
        return delta

    @property
    def text(self) -> str:
        return "".join(self._parts)


def transcript_text(segments: Iterable[WhisperSegment]) -> str:
    joiner = TextJoiner()
    for segment in segments:
        joiner.add(segment.text)
    return joiner.text


def duration_usage(duration: float) -> DurationUsage:
    """OpenAI's usage for whisper-1: the seconds of audio, not tokens."""
    return DurationUsage(seconds=round(duration, 3))


def to_json(
    segments: Sequence[WhisperSegment], duration: float, *, logprobs: list[Logprob] | None = None
) -> TranscriptionJson:
    return TranscriptionJson(text=transcript_text(segments), logprobs=logprobs, usage=duration_usage(duration))


def to_text(segments: Sequence[WhisperSegment]) -> str:
    text = transcript_text(segments)
    return f"{text}\n" if text else ""


def to_verbose_json(
    segments: Sequence[WhisperSegment],
    *,
    task: Task,
    language: str,
    duration: float,
    granularities: set[TimestampGranularity],
) -> TranscriptionVerboseJson:
    """OpenAI's verbose_json. `language` is a code; the answer names it in English ("english").

    Translations report "english", the language of their text, as OpenAI's TranslationVerbose does.
    """
    response = TranscriptionVerboseJson(
        task=task,
        language="english" if task == "translate" else language_name(language),
        duration=round(duration, 3),
        text=transcript_text(segments),
        usage=duration_usage(duration),
    )
    if "segment" in granularities:
        response.segments = [
            Segment(
                id=index,
                seek=segment.seek,
                start=segment.start,
                end=segment.end,
                text=segment.text,
                tokens=segment.tokens,
                temperature=segment.temperature or 0.0,
                avg_logprob=segment.avg_logprob,
                compression_ratio=segment.compression_ratio,
                no_speech_prob=segment.no_speech_prob,
            )
            for index, segment in enumerate(segments)
        ]
    if "word" in granularities:
        response.words = [
            Word(word=word.word.strip(), start=word.start, end=word.end)
            for segment in segments
            for word in segment.words or ()
            if word.word.strip()
        ]
    return response


# --- subtitles ---


def format_timestamp(seconds: float, *, decimal_marker: str) -> str:
    """`HH:MM:SS,mmm` (SRT, decimal_marker ",") or `HH:MM:SS.mmm` (WebVTT, ".")."""
    milliseconds = max(round(seconds * 1000), 0)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def _cues(segments: Iterable[WhisperSegment]) -> Iterable[tuple[float, float, str]]:
    for segment in segments:
        # A blank line ends a cue and "-->" starts a timing line: neither may appear in cue text.
        text = " ".join(segment.text.split()).replace("-->", "->")
        if text:
            yield segment.start, max(segment.end, segment.start), text


def to_srt(segments: Iterable[WhisperSegment]) -> str:
    blocks = [
        f"{number}\n{format_timestamp(start, decimal_marker=',')} --> {format_timestamp(end, decimal_marker=',')}\n"
        f"{text}\n"
        for number, (start, end, text) in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[WhisperSegment]) -> str:
    blocks = [
        f"{format_timestamp(start, decimal_marker='.')} --> {format_timestamp(end, decimal_marker='.')}\n{text}\n"
        for start, end, text in _cues(segments)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
