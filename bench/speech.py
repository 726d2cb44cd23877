"""Text-to-speech latency and throughput over HTTP, against raw piper on the same text in the same run.

Measures, for the bundled voice en_US-joe-medium and two texts (a 214-character paragraph of four
short sentences, and a 460-character one whose first sentence is long and has clauses):

- time to the first audio byte of POST /v1/audio/speech (pcm and mp3), divided by raw piper's time
  to its first sentence chunk (``PiperVoice.synthesize`` in this process). Target: at most 1.5.
- time to the last byte (the whole text synthesized, encoded and sent), divided by raw piper's
  time to synthesize the whole text. Target: at most 1.2.
- where the server's time to first audio goes, stage by stage, in this process: phonemizing the
  whole text (sentence splitting), the first model run, resampling it to 24 kHz for pcm, one hop
  into the inference pool and back, and an HTTP round trip that does no synthesis.

Raw piper and the server take turns, one measurement at a time, with a short pause between them
(onnxruntime's threads spin for a while after a run), so a change in the machine's load hits both
alike; the medians over the rounds are compared. piper draws random durations for every synthesis,
so single runs vary by tens of percent even on an idle machine. The server runs with its defaults
(the voice loaded once and kept).

Run from the repository root: ``uv run python -m bench.speech [--rounds 9]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx
from tests.helpers import Server

from speaches.audio.encoding import AudioEncoder
from speaches.config import Settings
from speaches.inference import InferencePool
from speaches.models.catalog import Kind, ModelRef
from speaches.speech.piper import load_piper_voice, speak_sentences

VOICE = "en_US-joe-medium"
TEXTS = {
    "4 short sentences": (
        "The library opens at nine in the morning on weekdays. Visitors can borrow up to ten books at a time. "
        "Laptops are available at the front desk for anyone with a card. Please keep your voice down in the "
        "reading rooms."
    ),
    "long first sentence": (
        "When the library opens its doors at nine in the morning, visitors who hold a card may borrow up to ten "
        "books at a time, reserve one of the quiet reading rooms on the second floor, or ask at the front desk "
        "for a laptop to use inside the building until closing time. Children under twelve need an adult with "
        "them. The café on the ground floor serves coffee and sandwiches until four in the afternoon. Please "
        "return every book on time, so others can enjoy it too."
    ),
}
FORMATS = ("pcm", "mp3")
FIRST_BYTE_TARGET = 1.5
WHOLE_TARGET = 1.2
PAUSE_SECONDS = 0.1


@dataclass
class Timings:
    first: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)

    def add(self, first: float, whole: float) -> None:
        self.first.append(first)
        self.whole.append(whole)


def time_raw_piper(synthesize: Callable[[], Iterable[object]]) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    for _chunk in synthesize():
        if first is None:
            first = time.perf_counter() - started
    assert first is not None
    return first, time.perf_counter() - started


def time_http(http: httpx.Client, url: str, text: str, response_format: str) -> tuple[float, float]:
    body = {"model": "tts-1", "voice": VOICE, "input": text, "response_format": response_format}
    started = time.perf_counter()
    first = None
    size = 0
    with http.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if first is None and chunk:
                first = time.perf_counter() - started
            size += len(chunk)
    assert first is not None
    assert size > 0
    return first, time.perf_counter() - started


def seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def stage_times(voice: object, text: str, http: httpx.Client, url: str) -> dict[str, float]:
    """One measurement of each stage before the first audio of `text`."""
    first_piece = next(speak_sentences(voice, text))  # type: ignore[arg-type]
    pool = InferencePool(1, 1)

    async def pool_hop() -> float:
        items = pool.iterate(lambda: iter([None]))
        started = time.perf_counter()
        await anext(items)
        elapsed = time.perf_counter() - started
        await items.aclose()
        return elapsed

    def resample() -> None:
        with AudioEncoder("pcm", 22_050, 24_000) as encoder:
            encoder.encode(first_piece[0])

    try:
        return {
            "phonemize the whole text": seconds(lambda: voice.phonemize(text)),  # type: ignore[attr-defined]
            "first model run (ours)": seconds(lambda: next(speak_sentences(voice, text))),  # type: ignore[arg-type]
            "resample it to 24 kHz": seconds(resample),
            "pool hop": asyncio.run(pool_hop()),
            "HTTP round trip (no synthesis)": seconds(lambda: http.get(f"{url}/health")),
        }
    finally:
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="measurements of each kind (default 9)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    voice = load_piper_voice(ModelRef(Kind.TTS, VOICE), Settings()).model
    raw = {name: Timings() for name in TEXTS}
    served = {(name, fmt): Timings() for name in TEXTS for fmt in FORMATS}
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in TEXTS}
    with Server({"TTS_MODEL_TTL": "-1"}) as server, httpx.Client(timeout=300) as http:
        # Warm up both: the first onnxruntime run of a session is slower, the first request loads the voice.
        for text in TEXTS.values():
            time_raw_piper(lambda text=text: voice.synthesize(text))
            for response_format in FORMATS:
                time_http(http, server.url, text, response_format)
        for _ in range(args.rounds):
            for name, text in TEXTS.items():
                raw[name].add(*time_raw_piper(lambda text=text: voice.synthesize(text)))
                for response_format in FORMATS:
                    time.sleep(PAUSE_SECONDS)
                    served[name, response_format].add(*time_http(http, server.url, text, response_format))
                time.sleep(PAUSE_SECONDS)
                for stage, elapsed in stage_times(voice, text, http, server.url).items():
                    stages[name].setdefault(stage, []).append(elapsed)
                time.sleep(PAUSE_SECONDS)
    load_after = os.getloadavg()

    median = statistics.median
    print(f"voice {VOICE}; {args.rounds} rounds, medians")
    print(f"CPUs: {os.cpu_count()}; load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    ok = True
    for name, text in TEXTS.items():
        print(f"\n{name}: {len(text)} characters")
        print(f"{'':26}{'first audio':>14}{'whole text':>14}")
        print(f"{'raw piper':26}{median(raw[name].first):>13.3f}s{median(raw[name].whole):>13.3f}s")
        for response_format in FORMATS:
            timings = served[name, response_format]
            print(f"{'HTTP ' + response_format:26}{median(timings.first):>13.3f}s{median(timings.whole):>13.3f}s")
        print("where the server's first audio goes (median of each stage):")
        for stage, values in stages[name].items():
            print(f"  {stage:32}{median(values) * 1000:>8.1f} ms")
        for response_format in FORMATS:
            timings = served[name, response_format]
            first_ratio = median(timings.first) / median(raw[name].first)
            whole_ratio = median(timings.whole) / median(raw[name].whole)
            first_ok, whole_ok = first_ratio <= FIRST_BYTE_TARGET, whole_ratio <= WHOLE_TARGET
            ok = ok and first_ok and whole_ok
            print(
                f"{response_format}: first byte / raw first chunk = {first_ratio:.2f} "
                f"(target <= {FIRST_BYTE_TARGET}: {'ok' if first_ok else 'MISSED'}); "
                f"whole / raw whole = {whole_ratio:.2f} (target <= {WHOLE_TARGET}: {'ok' if whole_ok else 'MISSED'})"
            )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
