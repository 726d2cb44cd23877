"""Live transcription latency and accuracy over a real WebSocket, against one-shot faster-whisper.

Streams about 45 s of English speech (the English half of multilingual.mp3, then jfk.flac, then the
lamp clip, with half a second of silence between them) to WS /v1/audio/transcriptions at real-time pace
in 100 ms frames, the way a microphone would, and measures:

- latency per word: from the moment the client had sent the frame holding the word's end (its `end` time in
  the audio) to the arrival of the message that confirmed it. Median and 90th percentile over every word of
  the final transcript. Target: median at most 2.0 s with tiny.en on CPU (the LocalAgreement paper reports
  3.3 s with large-v2 on a GPU).
- the final transcript's word error rate, next to transcribing the same audio in one call with raw
  faster-whisper (same model, its default beam search), so the cost of streaming is visible.

The server runs with its defaults (LIVE_MIN_CHUNK_SECONDS=1, INFERENCE_CONCURRENCY=2) and the model loaded
once before the measured session. The CPU load average is printed: the numbers mean little on a machine that
is busy with something else.

Run from the repository root: ``uv run python -m bench.live [--model M] [--runs N] [--speed S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
from tests.helpers import JFK_TEXT, LAMP_TEXT, LICENCE_TEXT, TINY_EN, running_server, word_error_rate
from tests.live.live_client import FRAME_SECONDS, SAMPLE_RATE, float_to_pcm, live_url, stream
from tests.live.speech_corpus import licence_jfk_lamp

from speaches.config import Settings
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.whisper import load_whisper_model

MEDIAN_TARGET_SECONDS = 2.0
# The bench audio: the English part of multilingual.mp3, then jfk, then the lamp clip.
REFERENCE = f"{LICENCE_TEXT} {JFK_TEXT} {LAMP_TEXT}"


def bench_audio() -> np.ndarray:
    return licence_jfk_lamp().samples


@dataclass
class Run:
    words: list[tuple[str, float, float]]
    """(word, end time in the audio, latency) for every confirmed word."""
    latencies: list[float]
    text: str
    wall_seconds: float


async def live_run(url: str, pcm: bytes, speed: float) -> Run:
    started = time.monotonic()
    result = await stream(url, pcm, speed=speed, time_limit=600)
    wall = time.monotonic() - started
    if result.close_code != 1000 or result.final_text is None:
        raise RuntimeError(f"session failed: {result.close_code} {result.close_reason} {result.errors}")
    words = []
    for message, received_at in zip(result.messages, result.received_at, strict=True):
        if message.get("type") != "transcript.text.delta":
            continue
        for word in message["words"]:
            # The frame holding the word's end: frame i carries audio up to (i + 1) * FRAME_SECONDS.
            frame = min(max(math.ceil(word["end"] / FRAME_SECONDS) - 1, 0), len(result.frame_sent_at) - 1)
            words.append((word["word"], word["end"], received_at - result.frame_sent_at[frame]))
    return Run(words=words, latencies=[latency for *_, latency in words], text=result.final_text, wall_seconds=wall)


def one_shot(model_id: str, audio: np.ndarray) -> tuple[str, float]:
    model = load_whisper_model(ModelRef(Kind.STT, model_id), Settings()).model
    started = time.perf_counter()
    segments, _info = model.transcribe(audio, language="en")
    text = "".join(segment.text for segment in segments)
    return text, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=TINY_EN)
    parser.add_argument("--runs", type=int, default=1, help="measured sessions, one after another")
    parser.add_argument("--speed", type=float, default=1.0, help="1.0 streams in real time")
    parser.add_argument("--words", action="store_true", help="print every word's latency")
    parser.add_argument("--min-chunk", type=float, default=None, help="LIVE_MIN_CHUNK_SECONDS for the server")
    args = parser.parse_args()

    audio = bench_audio()
    pcm = float_to_pcm(audio)
    print(f"input: {len(audio) / SAMPLE_RATE:.1f} s, {len(REFERENCE.split())} words; model {args.model}")
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())} on {os.cpu_count()} CPUs")

    env = {"STT_MODEL_TTL": "-1"}
    if args.min_chunk is not None:
        env["LIVE_MIN_CHUNK_SECONDS"] = str(args.min_chunk)
    with running_server(env) as server:
        url = live_url(server.url, model=args.model, response_format="verbose_json", language="en")
        await live_run(url, pcm[: 3 * SAMPLE_RATE * 2], speed=8.0)  # loads the model
        runs = [await live_run(url, pcm, args.speed) for _ in range(args.runs)]

    latencies = [latency for run in runs for latency in run.latencies]
    median = statistics.median(latencies)
    chunk = args.min_chunk or Settings().live_min_chunk_seconds
    print(f"\nlive, {args.speed:g}x real time, {chunk:g} s chunks, {len(runs)} run(s), {len(latencies)} words:")
    print(
        f"  latency median {median:.2f} s, p90 {percentile(latencies, 0.9):.2f} s, "
        f"mean {statistics.fmean(latencies):.2f} s, max {max(latencies):.2f} s "
        f"(target: median <= {MEDIAN_TARGET_SECONDS} s: {'met' if median <= MEDIAN_TARGET_SECONDS else 'MISSED'})"
    )
    if args.words:
        for word, end, latency in runs[-1].words:
            print(f"  {end:6.2f} s  {latency:5.2f} s  {word}")
    for index, run in enumerate(runs, 1):
        print(
            f"  run {index}: WER {word_error_rate(REFERENCE, run.text):.1%}, session {run.wall_seconds:.1f} s "
            f"for {len(audio) / SAMPLE_RATE:.1f} s of audio"
        )
    text, seconds = one_shot(args.model, audio)
    print(f"one-shot faster-whisper: WER {word_error_rate(REFERENCE, text):.1%} in {seconds:.1f} s")
    print(f"live final text: {runs[-1].text}")
    print(f"one-shot text:   {text.strip()}")
    print(f"load average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
