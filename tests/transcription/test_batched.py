"""Batched mode (`speaches.transcription.batched`) without a server, with the real tiny.en model.

The chunking (the VAD cut into chunks, times mapped back), the decoding (each chunk goes on from its
last timestamp; how many chunks share a step changes nothing), which requests take batched mode, and
its chunks in cross-request batches giving what they give alone.
"""

from __future__ import annotations

import io
import itertools
import threading
import wave
from collections import Counter
from typing import Any

import numpy as np
import pytest
from faster_whisper import WhisperModel

from speaches.audio.decoding import decode_audio
from speaches.config import Settings, WhisperConfig
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.batched import SAMPLE_RATE, SpeechChunk, speech_chunks
from speaches.transcription.batching import BatchingWhisper
from speaches.transcription.whisper import DecodeOptions, Transcription, load_whisper_model
from tests.helpers import AUDIO_DIR, TINY_EN, word_error_rate

DENSE = AUDIO_DIR / "dense_repeated_sentences.opus"


def test_times_in_joined_audio_map_back_to_the_window() -> None:
    # Speech at 1-3 s and 10-12 s of the window, joined into 4 s of audio.
    chunk = SpeechChunk(((1 * SAMPLE_RATE, 3 * SAMPLE_RATE), (10 * SAMPLE_RATE, 12 * SAMPLE_RATE)))
    assert chunk.samples == 4 * SAMPLE_RATE
    assert chunk.window_seconds(0.0, is_end=False) == 1.0
    assert chunk.window_seconds(1.5, is_end=False) == 2.5
    assert chunk.window_seconds(3.0, is_end=True) == 11.0
    # On the seam: an end stays in the first span, a start goes to the second.
    assert chunk.window_seconds(2.0, is_end=True) == 3.0
    assert chunk.window_seconds(2.0, is_end=False) == 10.0
    # Past the end (a timestamp of the padded 30 s): the end of the last span.
    assert chunk.window_seconds(9.0, is_end=True) == 12.0


@pytest.fixture(scope="module")
def speech_with_pauses() -> np.ndarray:
    """jfk.flac three times with 5 s of silence before each: 48 s."""
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    silence = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    return np.concatenate([silence, jfk, silence, jfk, silence, jfk])


@pytest.mark.parametrize("max_seconds", [8.0, 15.0, 30.0])
def test_chunks_hold_all_the_speech_in_order_and_within_the_limit(
    speech_with_pauses: np.ndarray, max_seconds: float
) -> None:
    chunks = speech_chunks(speech_with_pauses, max_seconds=max_seconds)
    spans = [span for chunk in chunks for span in chunk.spans]
    assert all(chunk.samples <= max_seconds * SAMPLE_RATE for chunk in chunks)
    assert all(start < end for start, end in spans)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))
    # Every second of speech (each jfk copy, bar its own 1-2 s pauses) falls inside some span; the
    # silences between the copies fall outside them all.
    for copy in range(3):
        start = 5 + copy * 16.0
        inside = [
            t for t in np.arange(start + 0.5, start + 10.5, 0.5) if any(a <= t * SAMPLE_RATE < b for a, b in spans)
        ]
        assert len(inside) >= 16, (copy, spans)
        assert not any(a <= (start - 2.5) * SAMPLE_RATE < b for a, b in spans)


def test_silence_has_no_chunks() -> None:
    assert speech_chunks(np.zeros(40 * SAMPLE_RATE, dtype=np.float32), max_seconds=30.0) == []


def test_request_vad_settings_cut_the_chunks(speech_with_pauses: np.ndarray) -> None:
    # chunking_strategy's server_vad settings reach the VAD: no padding around speech keeps less audio.
    padded = speech_chunks(speech_with_pauses, max_seconds=30.0)
    tight = speech_chunks(speech_with_pauses, max_seconds=30.0, vad_parameters={"speech_pad_ms": 0})
    assert sum(chunk.samples for chunk in tight) < sum(chunk.samples for chunk in padded) - SAMPLE_RATE


@pytest.mark.parametrize(
    ("options", "batched"),
    [
        (DecodeOptions(), True),
        (DecodeOptions(timed_segments=True), False),  # srt, vtt, verbose_json
        (DecodeOptions(temperature=0.4), False),
        (DecodeOptions(token_logprobs=True), False),
        (DecodeOptions(vad_filter=False), False),
        (DecodeOptions(word_timestamps=True), False),
    ],
)
def test_which_requests_take_batched_mode(options: DecodeOptions, batched: bool) -> None:
    transcription = Transcription(b"", options, WhisperConfig(), model_id=TINY_EN)
    long_window = np.zeros(31 * SAMPLE_RATE, dtype=np.float32)
    assert transcription._uses_batched_mode(long_window) is batched
    # One 30 s window has nothing to batch, whatever was asked.
    assert not transcription._uses_batched_mode(long_window[: 30 * SAMPLE_RATE])


def load_tiny(*, max_batch_size: int) -> WhisperModel:
    # One replica, whatever the machine's worker layout: with two, the jobs' calls could each take one
    # instead of waiting to share a batch.
    settings = Settings(whisper={"max_batch_size": max_batch_size, "batch_wait_ms": 1000, "num_workers": 1})
    model: WhisperModel = load_whisper_model(ModelRef(Kind.STT, TINY_EN), settings).model
    return model


@pytest.fixture(scope="module")
def tiny_plain() -> WhisperModel:
    """tiny.en without cross-request batching: CTranslate2 as faster-whisper uses it."""
    return load_tiny(max_batch_size=1)


def batched_segments(model: WhisperModel, audio: Any, *, batch_size: int = 8) -> list[Any]:
    transcription = Transcription(audio, DecodeOptions(), WhisperConfig(batch_size=batch_size), model_id=TINY_EN)
    segments = list(transcription.segments(model))
    assert transcription.batched_windows == 1
    return segments


@pytest.fixture(scope="module")
def dense_alone(tiny_plain: WhisperModel) -> list[Any]:
    return batched_segments(tiny_plain, DENSE)


def test_chunks_go_on_from_their_last_timestamp_and_keep_every_sentence(
    tiny_plain: WhisperModel, dense_alone: list[Any]
) -> None:
    reference = DENSE.with_suffix(".txt").read_text(encoding="utf-8")
    text = "".join(segment.text for segment in dense_alone)
    # faster-whisper's pipeline, which decodes each chunk once, had 0.14 here (tests/data/README.md).
    assert word_error_rate(reference, text) <= 0.05, text
    assert all(segment.start < segment.end for segment in dense_alone)
    assert all(a.end <= b.start for a, b in itertools.pairwise(dense_alone)), "segments overlap or go back"
    assert [segment.id for segment in dense_alone] == list(range(1, len(dense_alone) + 1))
    # The model ended a chunk's text early and its decoding went on from there: a chunk whose segments
    # come from two steps (each step's `seek` is where it started in the window).
    chunks = speech_chunks(decode_audio(DENSE), max_seconds=30.0)
    steps_per_chunk: Counter[int] = Counter()
    for seek in {segment.seek for segment in dense_alone}:
        # The chunk the step belongs to: the last to start by then (seek is rounded to a 10 ms frame).
        sample = (seek + 1) * 160
        steps_per_chunk[max(i for i, chunk in enumerate(chunks) if chunk.spans[0][0] <= sample)] += 1
    assert max(steps_per_chunk.values()) >= 2, steps_per_chunk
    # How many chunks share a step changes nothing: CTranslate2 decodes each window of a batch alone.
    one_at_a_time = batched_segments(tiny_plain, DENSE, batch_size=1)
    assert [(s.text, s.start, s.end) for s in one_at_a_time] == [(s.text, s.start, s.end) for s in dense_alone]


def test_batched_chunks_of_concurrent_requests_share_model_calls_and_give_what_they_give_alone(
    tiny_plain: WhisperModel, dense_alone: list[Any]
) -> None:
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    silence = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    samples = np.concatenate([jfk, silence, jfk, silence, jfk])
    encoded = io.BytesIO()
    with wave.open(encoded, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes((samples * 32767).astype(np.int16).tobytes())
    jfk_three_times = encoded.getvalue()
    jfk_alone = batched_segments(tiny_plain, jfk_three_times)

    batching = load_tiny(max_batch_size=8)
    queue = batching.model
    assert isinstance(queue, BatchingWhisper)
    start = threading.Barrier(2)
    results: dict[str, list[Any]] = {}

    def run(name: str, audio: Any) -> None:
        start.wait()
        results[name] = batched_segments(batching, audio)

    threads = [threading.Thread(target=run, args=args) for args in (("dense", DENSE), ("jfk", jfk_three_times))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for name, alone in (("dense", dense_alone), ("jfk", jfk_alone)):
        assert [(s.text, s.start, s.end) for s in results[name]] == [(s.text, s.start, s.end) for s in alone], name
    # One job alone decodes at most its own chunks (3 and 2) in a step: more in one call means they shared it.
    assert any(call == "generate" and windows > 3 for call, windows in queue.batch_sizes), queue.batch_sizes
