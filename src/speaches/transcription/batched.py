"""Batched decoding that keeps every word: VAD-aligned chunks decoded side by side, each one seeking.

faster-whisper's `BatchedInferencePipeline` decodes each chunk of up to 30 s once, without
timestamps. When the model ends its text early (small models often stop after a sentence or two
of a chunk holding many short ones) the rest of the chunk is lost: on dense short sentences it
dropped a quarter of the words (issue 19). Sequential decoding does not lose them because it
decodes with timestamps and, where a window's text ends early, goes on from the last timestamp.

This module does both: the window's speech is cut into chunks (:func:`speech_chunks`, the one
place where batched mode chooses its chunks; cross-request batching reuses it), and the chunks
are decoded in lockstep, up to `batch_size` at a time, each with timestamps and each seeking on
from its last timestamp until its audio is covered, as sequential decoding does. A chunk that is
done makes room in the batch for the next. Decoding is at temperature 0 with beam search and
never falls back to sampling, so the same audio always gives the same text, and each step costs
one encoder pass and one bounded decode (at most the model's 448 tokens) per chunk.

Everything here blocks; the caller runs it in the inference pool.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ctranslate2.models import WhisperGenerationResult
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import Segment

SAMPLE_RATE = 16_000
# The encoder sees 30 s; the feature extractor makes 100 frames a second.
WINDOW_FRAMES = 3000
SAMPLES_PER_FRAME = 160
# Silero VAD as faster-whisper's batched pipeline sets it: split speech at pauses of 160 ms or more.
VAD_MIN_SILENCE_MS = 160
# Whisper's own no-speech rule: a window is silence when both hold.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
BEAM_SIZE = 5
# Left after a chunk's last closed segment, less than this is the VAD's 400 ms padding and the end
# of the last word, not more speech (measured: the model's end timestamps fall 0.3-0.6 s early).
TRAILING_PAD_FRAMES = 100


@dataclasses.dataclass(frozen=True)
class SpeechChunk:
    """Spans of speech (sample offsets in the window, end exclusive) decoded together as one audio.

    The spans are cut out of the window and joined, so silence between them costs nothing; each
    span keeps the VAD's 400 ms padding, so joined spans still sound like speech with pauses.
    """

    spans: tuple[tuple[int, int], ...]

    @property
    def samples(self) -> int:
        return sum(end - start for start, end in self.spans)

    def audio(self, window: np.ndarray) -> np.ndarray:
        return np.concatenate([window[start:end] for start, end in self.spans])

    def window_seconds(self, seconds: float, *, is_end: bool) -> float:
        """A time in the joined audio, as seconds from the window's start.

        A time on the seam of two spans belongs to the earlier span if it ends something
        (`is_end`), else to the later one, so a segment never stretches across a cut silence.
        """
        remaining = round(seconds * SAMPLE_RATE)
        for index, (start, end) in enumerate(self.spans):
            length = end - start
            last = index == len(self.spans) - 1
            if remaining < length or (is_end and remaining == length) or last:
                return (start + min(remaining, length)) / SAMPLE_RATE
            remaining -= length
        raise AssertionError("unreachable: the last span returns")


def speech_chunks(
    window: np.ndarray, *, max_seconds: float, vad_parameters: Mapping[str, float] | None = None
) -> list[SpeechChunk]:
    """The chunks batched mode decodes: the window's speech in time order, at most `max_seconds` each.

    The Silero VAD finds the speech (spans longer than `max_seconds` are split at their last pause,
    or at the limit when there is none) and consecutive spans are joined while the chunk stays
    within `max_seconds`. Chunk boundaries therefore fall in pauses, never inside a word.
    `vad_parameters` (`VadOptions` fields, from a request's `chunking_strategy`) replace the VAD's
    settings here, except the chunk length.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    settings: dict[str, float] = {"min_silence_duration_ms": VAD_MIN_SILENCE_MS, **(vad_parameters or {})}
    options = VadOptions(**{**settings, "max_speech_duration_s": max_seconds})
    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[SpeechChunk] = []
    spans: list[tuple[int, int]] = []
    length = 0
    for speech in get_speech_timestamps(window, options):
        span = (int(speech["start"]), int(speech["end"]))
        if spans and length + span[1] - span[0] > limit:
            chunks.append(SpeechChunk(tuple(spans)))
            spans, length = [], 0
        spans.append(span)
        length += span[1] - span[0]
    if spans:
        chunks.append(SpeechChunk(tuple(spans)))
    return chunks


@dataclasses.dataclass
class _ChunkDecoding:
    """One chunk on its way through the decoder: where it has got to and what it has said."""

    chunk: SpeechChunk
    features: np.ndarray | None
    """The chunk's log-mel frames; dropped once the chunk is done."""
    seek: int = 0
    """Frames of the chunk decoded so far."""
    segments: list[Segment] = dataclasses.field(default_factory=list)

    @property
    def frames(self) -> int:
        assert self.features is not None
        return int(self.features.shape[-1])

    @property
    def done(self) -> bool:
        return self.features is None or self.seek >= self.frames


def decode_chunks(
    model: WhisperModel,
    window: np.ndarray,
    chunks: list[SpeechChunk],
    tokenizer: Tokenizer,
    *,
    prompt: list[int],
    batch_size: int,
) -> Iterator[Segment]:
    """faster-whisper `Segment`s for `chunks` of `window`, in time order, times from the window's start.

    `prompt` is the decoder prompt every step starts from (`WhisperModel.get_prompt` with
    timestamps); CTranslate2 needs one length for a whole batch, so chunks do not carry their own
    previous text into later steps. A chunk's segments are yielded once it and every chunk before
    it are done; memory holds the features of at most `batch_size` chunks.
    """
    from faster_whisper.transcribe import get_suppressed_tokens

    suppress_tokens = get_suppressed_tokens(tokenizer, [-1])
    waiting = deque(enumerate(chunks))
    active: list[tuple[int, _ChunkDecoding]] = []
    finished: dict[int, _ChunkDecoding] = {}
    next_to_yield = 0
    segment_id = 0
    while waiting or active:
        while waiting and len(active) < batch_size:
            index, chunk = waiting.popleft()
            features = model.feature_extractor(chunk.audio(window))[..., :-1]
            active.append((index, _ChunkDecoding(chunk, features)))
        step = [decoding for _, decoding in active]
        results = _decode_step(model, step, prompt, suppress_tokens)
        for decoding, result in zip(step, results, strict=True):
            _advance(model, tokenizer, decoding, result)
        still_active = []
        for index, decoding in active:
            if decoding.done:
                decoding.features = None
                finished[index] = decoding
            else:
                still_active.append((index, decoding))
        active = still_active
        while next_to_yield in finished:
            for segment in finished.pop(next_to_yield).segments:
                segment_id += 1
                yield dataclasses.replace(segment, id=segment_id)
            next_to_yield += 1


def _decode_step(
    model: WhisperModel, step: list[_ChunkDecoding], prompt: list[int], suppress_tokens: list[int]
) -> list[WhisperGenerationResult]:
    """One encoder pass and one beam search over the next 30 s of every chunk in `step`."""
    from faster_whisper.audio import pad_or_trim

    batch = np.stack(
        [pad_or_trim(decoding.features[:, decoding.seek : decoding.seek + WINDOW_FRAMES]) for decoding in step]  # type: ignore[index]
    )
    encoder_output = _encode(model, batch)
    return list(
        model.model.generate(
            encoder_output,
            [prompt] * len(step),
            beam_size=BEAM_SIZE,
            patience=1,
            length_penalty=1,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=suppress_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            # Whisper's rule: the first timestamp lies within the first second.
            max_initial_timestamp_index=50,
        )
    )


def _encode(model: WhisperModel, batch: np.ndarray) -> Any:
    """The encoder's output for a batch of windows (a CTranslate2 `StorageView`).

    On a CPU one encoder pass over eight windows cost 20-30% more CPU time than eight passes of one,
    for the same output bit for bit (docs/benchmarks.md): the encoder is bound by arithmetic there,
    not by calls. A GPU runs the batch in one pass.
    """
    if len(batch) == 1 or model.model.device != "cpu":
        return model.encode(batch)
    import ctranslate2

    from speaches.transcription.content_window import encoder_input, full_windows

    # Cut once for the whole batch, so that every window's output has the same length; no window is cut again.
    batch = encoder_input(model, batch)
    with full_windows():
        outputs = [np.asarray(model.encode(batch[index : index + 1])) for index in range(len(batch))]
    return ctranslate2.StorageView.from_array(np.concatenate(outputs))


def _advance(
    model: WhisperModel, tokenizer: Tokenizer, decoding: _ChunkDecoding, result: WhisperGenerationResult
) -> None:
    """Keep the finished segments of one step and move the chunk's seek on, as sequential decoding does."""
    from faster_whisper.transcribe import Segment, get_compression_ratio

    size = min(WINDOW_FRAMES, decoding.frames - decoding.seek)
    tokens = result.sequences_ids[0]
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD:
        decoding.seek += size
        return
    pieces, seek, _single_timestamp_ending = model._split_segments_by_timestamps(
        tokenizer=tokenizer,
        tokens=tokens,
        time_offset=decoding.seek / model.frames_per_second,
        segment_size=size,
        segment_duration=size / model.frames_per_second,
        seek=decoding.seek,
    )
    for piece in pieces:
        text = tokenizer.decode(piece["tokens"])
        if piece["start"] == piece["end"] or not text.strip():
            continue
        decoding.segments.append(
            Segment(
                id=0,
                seek=_window_frame(decoding.chunk, decoding.seek),
                start=decoding.chunk.window_seconds(piece["start"], is_end=False),
                end=decoding.chunk.window_seconds(piece["end"], is_end=True),
                text=text,
                tokens=piece["tokens"],
                avg_logprob=avg_logprob,
                compression_ratio=get_compression_ratio(text.strip()),
                no_speech_prob=result.no_speech_prob,
                words=None,
                temperature=0.0,
            )
        )
    # A step that ends on its first timestamp would decode the same 30 s again: move past it.
    seek = seek if seek > decoding.seek else decoding.seek + size
    closed = bool(tokens) and tokens[-1] >= tokenizer.timestamp_begin
    if closed and decoding.frames - seek < TRAILING_PAD_FRAMES:
        # The text ended with a closed segment and what is left is the VAD's padding after the
        # last word: decoding it alone costs a whole window and makes the model invent a word.
        seek = decoding.frames
    decoding.seek = seek


def _window_frame(chunk: SpeechChunk, chunk_frame: int) -> int:
    seconds = chunk.window_seconds(chunk_frame / (SAMPLE_RATE / SAMPLES_PER_FRAME), is_end=False)
    return round(seconds * SAMPLE_RATE / SAMPLES_PER_FRAME)
