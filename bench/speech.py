"""Text-to-speech latency and throughput over HTTP, against raw piper on the same text in the same run.

Measures, for a four-sentence paragraph and the bundled voice en_US-joe-medium:

- time to the first audio byte of POST /v1/audio/speech (mp3 and pcm), divided by raw piper's time
  to its first sentence chunk (``PiperVoice.synthesize`` in this process). Target: at most 1.5.
- time to the last byte (the whole paragraph synthesized, encoded and sent), divided by raw piper's
  time to synthesize the whole paragraph. Target: at most 1.2.

Raw piper and the server take turns, one measurement at a time, so a change in the machine's load
hits both alike; the medians over the rounds are compared. The server runs with its defaults (the
voice loaded once and kept).

Run from the repository root: ``uv run python -m bench.speech [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx
from tests.helpers import Server

from speaches.config import Settings
from speaches.speech.piper import load_piper_voice

VOICE = "en_US-joe-medium"
PARAGRAPH = (
    "The library opens at nine in the morning on weekdays. Visitors can borrow up to ten books at a time. "
    "Laptops are available at the front desk for anyone with a card. Please keep your voice down in the "
    "reading rooms."
)
FIRST_BYTE_TARGET = 1.5
WHOLE_TARGET = 1.2


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


def time_http(http: httpx.Client, url: str, response_format: str) -> tuple[float, float]:
    body = {"model": "tts-1", "voice": VOICE, "input": PARAGRAPH, "response_format": response_format}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="measurements of each kind (default 7)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    voice = load_piper_voice(VOICE, Settings()).model
    raw, results = Timings(), {"mp3": Timings(), "pcm": Timings()}
    with Server({"TTS_MODEL_TTL": "-1"}) as server, httpx.Client(timeout=300) as http:
        # Warm up both: the first onnxruntime run of a session is slower, the first request loads the voice.
        time_raw_piper(lambda: voice.synthesize(PARAGRAPH))
        for response_format in results:
            time_http(http, server.url, response_format)
        for _ in range(args.rounds):
            raw.add(*time_raw_piper(lambda: voice.synthesize(PARAGRAPH)))
            for response_format, timings in results.items():
                timings.add(*time_http(http, server.url, response_format))
    load_after = os.getloadavg()

    median = statistics.median
    print(f"text: {len(PARAGRAPH)} characters, 4 sentences; voice {VOICE}; {args.rounds} rounds, medians")
    print(f"CPUs: {os.cpu_count()}; load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'':22}{'first audio':>14}{'whole paragraph':>18}")
    print(f"{'raw piper':22}{median(raw.first):>13.3f}s{median(raw.whole):>17.3f}s")
    for response_format, timings in results.items():
        print(f"{'HTTP ' + response_format:22}{median(timings.first):>13.3f}s{median(timings.whole):>17.3f}s")
    print()
    ok = True
    for response_format, timings in results.items():
        first_ratio = median(timings.first) / median(raw.first)
        whole_ratio = median(timings.whole) / median(raw.whole)
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
