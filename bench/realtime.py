"""Realtime API transcription latency and accuracy, through the official openai SDK, against the live WebSocket
and against the same audio sent as one file.

Streams about 47 s of English speech (the English half of multilingual.mp3, jfk.flac and the lamp clip, with
1.5 s pauses, so server VAD makes turns of them) as 24 kHz PCM16 in 100 ms appends at real-time pace, the
way a microphone client would, to `WS /v1/realtime?intent=transcription` (server VAD, default settings), and
measures:

- delta lag: from the moment the client had sent the append holding a word's end (the word's end time from a
  word-timestamped transcription of the whole file) to the arrival of the transcription delta that carried
  it. Median and 90th percentile over every word the deltas and the file agree on. Targets on a 2-core CPU
  with tiny.en: median <= 1.5 s, p90 <= 2.5 s;
- completed lag: from `speech_stopped` to that item's `completed`. Target: <= 1.0 s;
- word error rate of the completed transcripts against the reference, next to the same audio sent as one
  file to POST /v1/audio/transcriptions (target: within 0.02 of it);

then streams the same audio through the live WebSocket (WS /v1/audio/transcriptions) in one run and prints
its word latency beside the Realtime figures, as a ratio. The load average is printed before and after: the
targets are for a quiet machine.

Run from the repository root: ``uv run python -m bench.realtime [--model M] [--speed S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import statistics
import time
import wave
from dataclasses import dataclass

import jiwer
import numpy as np
from openai import OpenAI
from tests.helpers import (
    AUDIO_DIR,
    JFK_TEXT,
    LAMP_TEXT,
    LICENCE_TEXT,
    TINY_EN,
    normalize,
    running_server,
    word_error_rate,
)
from tests.live.live_client import float_to_pcm, live_url, stream
from tests.live.speech_corpus import LICENCE_SECONDS
from tests.realtime.realtime_client import Events, append_paced, pcm_at, sdk, silence

from speaches.audio.decoding import decode_audio

SAMPLE_RATE = 16_000
CHUNK_SECONDS = 0.1
PAUSE_SECONDS = 1.5
REFERENCE = f"{LICENCE_TEXT} {JFK_TEXT} {LAMP_TEXT}"
TARGETS = {"delta median": 1.5, "delta p90": 2.5, "completed": 1.0, "wer gap": 0.02}


def bench_audio() -> np.ndarray:
    gap = np.zeros(round(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    licence = decode_audio(AUDIO_DIR / "multilingual.mp3")[: round(LICENCE_SECONDS * SAMPLE_RATE)]
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    lamp = decode_audio(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")
    return np.concatenate([licence, gap, jfk, gap, lamp, gap, gap])


def wav_of(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(SAMPLE_RATE)
        file.writeframes(float_to_pcm(samples))
    return out.getvalue()


@dataclass
class FileResult:
    text: str
    word_ends: list[tuple[str, float]]


def one_file(url: str, model: str, audio: np.ndarray) -> FileResult:
    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=600)
    answer = client.audio.transcriptions.create(
        model=model,
        file=("bench.wav", wav_of(audio)),
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    words = [(normalize(word.word), word.end) for word in answer.words or [] if normalize(word.word)]
    return FileResult(text=answer.text, word_ends=words)


@dataclass
class RealtimeRun:
    events: Events
    sent_at: list[float]
    items: list[str]

    def transcript(self) -> str:
        completed = {
            e.item_id: e.transcript for e in self.events.of("conversation.item.input_audio_transcription.completed")
        }
        return " ".join(completed.get(item, "") for item in self.items)

    def completed_lags(self) -> list[float]:
        stopped = {}
        for event, at in zip(self.events.items, self.events.times, strict=True):
            if event.type == "input_audio_buffer.speech_stopped":
                stopped[event.item_id] = at
        return [
            at - stopped[event.item_id]
            for event, at in zip(self.events.items, self.events.times, strict=True)
            if event.type == "conversation.item.input_audio_transcription.completed" and event.item_id in stopped
        ]

    def delta_words(self) -> list[tuple[str, float]]:
        """(word, arrival) of every delta word, in the order the items were spoken."""
        by_item: dict[str, list[tuple[str, float]]] = {item: [] for item in self.items}
        for event, at in zip(self.events.items, self.events.times, strict=True):
            if event.type == "conversation.item.input_audio_transcription.delta" and event.item_id in by_item:
                by_item[event.item_id].extend((word, at) for word in normalize(event.delta or "").split())
        return [word for item in self.items for word in by_item[item]]


async def realtime_run(url: str, model: str, pcm: bytes, speed: float) -> RealtimeRun:
    events = Events()
    sent_at: list[float] = []
    async with sdk(url).realtime.connect(model=model, extra_query={"intent": "transcription"}) as connection:
        await connection.send(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"transcription": {"language": "en"}}}},
            }
        )
        async for event in connection:
            if event.type == "session.updated":
                break
        sender = asyncio.create_task(append_paced(connection, pcm, speed=speed, sent_at=sent_at))
        async with asyncio.timeout(len(pcm) / 48_000 / speed + 300):
            while True:
                try:
                    event = await asyncio.wait_for(connection.recv(), 1.0)
                except TimeoutError:
                    event = None
                if event is not None:
                    events.items.append(event)
                    events.times.append(time.monotonic())
                committed = len(events.of("input_audio_buffer.committed"))
                finished = committed == len(events.of("conversation.item.done"))
                # Every turn that started has been committed and completed, after the last append.
                if (
                    sender.done()
                    and committed
                    and finished
                    and len(events.of("input_audio_buffer.speech_started")) == committed
                ):
                    break
        await sender
    items = [event.item_id for event in events.of("input_audio_buffer.committed")]
    return RealtimeRun(events=events, sent_at=sent_at, items=items)


def delta_lags(run: RealtimeRun, reference: FileResult) -> list[float]:
    """Arrival minus send time of the append holding the word's end, for words the two transcripts share."""
    hypothesis = run.delta_words()
    alignment = jiwer.process_words(" ".join(w for w, _ in reference.word_ends), " ".join(w for w, _ in hypothesis))
    lags = []
    for chunk in alignment.alignments[0]:
        if chunk.type != "equal":
            continue
        for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
            end = reference.word_ends[chunk.ref_start_idx + offset][1]
            arrival = hypothesis[chunk.hyp_start_idx + offset][1]
            append = min(max(math.ceil(end / CHUNK_SECONDS) - 1, 0), len(run.sent_at) - 1)
            lags.append(arrival - run.sent_at[append])
    return lags


async def live_lags(url: str, model: str, audio: np.ndarray, speed: float) -> tuple[list[float], str]:
    result = await stream(
        live_url(url, model=model, response_format="verbose_json", language="en"),
        float_to_pcm(audio),
        speed=speed,
        time_limit=900,
    )
    lags = []
    for message, received_at in zip(result.messages, result.received_at, strict=True):
        if isinstance(message, dict) and message.get("type") == "transcript.text.delta":
            for word in message["words"]:
                frame = min(max(math.ceil(word["end"] / CHUNK_SECONDS) - 1, 0), len(result.frame_sent_at) - 1)
                lags.append(received_at - result.frame_sent_at[frame])
    return lags, result.final_text or ""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=TINY_EN)
    parser.add_argument("--speed", type=float, default=1.0, help="1.0 streams in real time")
    parser.add_argument("--no-live", action="store_true", help="skip the live WebSocket comparison")
    parser.add_argument("--min-chunk", type=float, default=None, help="LIVE_MIN_CHUNK_SECONDS for the server")
    args = parser.parse_args()

    audio = bench_audio()
    pcm = pcm_at(audio)
    print(f"input: {len(audio) / SAMPLE_RATE:.1f} s, {len(REFERENCE.split())} words; model {args.model}")
    print(f"load average before: {load()} on {os.cpu_count()} CPUs")
    print(f"WHISPER__CONTENT_WINDOWS={os.environ.get('WHISPER__CONTENT_WINDOWS', 'off')}")
    env = {"STT_MODEL_TTL": "-1"}
    if args.min_chunk is not None:
        env["LIVE_MIN_CHUNK_SECONDS"] = str(args.min_chunk)
    with running_server(env) as server:
        reference = await asyncio.to_thread(one_file, server.url, args.model, audio)  # also loads the model
        await realtime_run(server.url, args.model, pcm[: 48_000 * 4] + silence(2.0), speed=8.0)  # warms the path
        run = await realtime_run(server.url, args.model, pcm, args.speed)
        live: tuple[list[float], str] | None = None
        if not args.no_live:
            live = await live_lags(server.url, args.model, audio, args.speed)
        print(f"load average after: {load()}")

    lags = delta_lags(run, reference)
    completed = run.completed_lags()
    realtime_wer = word_error_rate(REFERENCE, run.transcript())
    file_wer = word_error_rate(REFERENCE, reference.text)
    median, p90 = statistics.median(lags), percentile(lags, 0.9)
    print(f"\nrealtime, {args.speed:g}x real time, {len(run.items)} turns, {len(lags)} words timed:")
    print(
        f"  delta lag median {median:.2f} s ({verdict(median, TARGETS['delta median'])} <= {TARGETS['delta median']})"
    )
    print(f"  delta lag p90    {p90:.2f} s ({verdict(p90, TARGETS['delta p90'])} <= {TARGETS['delta p90']})")
    worst = max(completed)
    print(
        f"  speech_stopped -> completed: median {statistics.median(completed):.2f} s, worst {worst:.2f} s "
        f"({verdict(worst, TARGETS['completed'])} <= {TARGETS['completed']})"
    )
    gap = realtime_wer - file_wer
    print(
        f"  WER {realtime_wer:.1%} vs one file {file_wer:.1%}: gap {gap:+.1%} "
        f"({verdict(gap, TARGETS['wer gap'])} <= {TARGETS['wer gap']:.0%})"
    )
    if live is not None:
        live_median, live_p90 = statistics.median(live[0]), percentile(live[0], 0.9)
        print(
            f"live WebSocket, same audio: word latency median {live_median:.2f} s, p90 {live_p90:.2f} s, "
            f"WER {word_error_rate(REFERENCE, live[1]):.1%}; realtime/live median ratio {median / live_median:.2f}"
        )
    print(f"realtime text: {run.transcript()}")
    if live is not None:
        print(f"live text: {live[1]}")
    print(f"one-file text: {reference.text.strip()}")


if __name__ == "__main__":
    asyncio.run(main())
