"""Speech-to-text over HTTP against raw faster-whisper: same model, same settings, same machine, one run.

For each model (default: the bundled `Systran/faster-whisper-tiny.en` and `Systran/faster-whisper-base`):

- jfk.flac (11 s): POST /v1/audio/transcriptions (json) vs `WhisperModel.transcribe(path)` consumed to
  the end. Target: server / raw <= 1.10.
- a 5-minute English file (jfk.flac and the English half of multilingual.mp3, repeated, in a temp dir):
  - sequential: the server with `vad_filter=false` vs `WhisperModel.transcribe(path)`. Target <= 1.10.
  - batched: the server's default (batched mode for windows over 30 s) vs
    `BatchedInferencePipeline.transcribe(path, batch_size=8)`. Target <= 1.10, and the server's batched
    time within 1.2x raw batched.
- word error rate of sequential and batched decoding, on jfk (raw) and on the 5-minute file (server).

The raw model is loaded in this process by the server's own loader (int8 on CPU, the same thread
settings), so both sides run identical CTranslate2 models. Raw and server take turns, one measurement
at a time, so a change in machine load hits both alike; medians over the rounds are compared.

Run from the repository root: ``uv run python -m bench.transcription [--rounds 5] [--long-rounds 1]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tests.helpers import AUDIO_DIR, JFK_TEXT, LICENCE_TEXT, Server, base_server_env, word_error_rate

from speaches.audio.decoding import decode_audio
from speaches.config import Settings
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.whisper import load_whisper_model

MODELS = ["Systran/faster-whisper-tiny.en", "Systran/faster-whisper-base"]
JFK = AUDIO_DIR / "jfk.flac"
MULTILINGUAL = AUDIO_DIR / "multilingual.mp3"
# multilingual.mp3 reads the MIT licence in English for its first 29 s (German follows). The reference
# is the licence text without its parenthesis, which the reader skips; where the reading differs from
# the text, every mode loses the same few words.
LICENCE_SECONDS = 29.5
SERVER_TARGET = 1.10
BATCHED_TARGET = 1.2
BATCH_SIZE = 8


@dataclass
class Timings:
    raw: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    raw_text: str = ""
    server_text: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.server) / statistics.median(self.raw)


def make_long_file(folder: Path, seconds: float) -> tuple[Path, str]:
    """jfk.flac and the English half of multilingual.mp3 (29.5 s), each followed by a 1 s pause, repeated
    to about `seconds`: a WAV file and its reference text.

    Mixing two texts keeps a 30 s decoding window from holding one sentence twice: repeated text trips
    Whisper's compression-ratio check and makes it resample at higher temperatures, at random.
    """
    jfk = decode_audio(JFK)
    licence = decode_audio(MULTILINGUAL)[: int(LICENCE_SECONDS * 16_000)]
    pause = np.zeros(16_000, dtype=np.float32)
    group = np.concatenate([jfk, pause, licence, pause])
    repeats = max(round(seconds * 16_000 / len(group)), 1)
    samples = np.tile(group, repeats)
    path = folder / "five-minutes.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((samples * 32767).astype(np.int16).tobytes())
    return path, " ".join([f"{JFK_TEXT} {LICENCE_TEXT}"] * repeats)


def timed(fn: Callable[[], str]) -> tuple[float, str]:
    started = time.perf_counter()
    text = fn()
    return time.perf_counter() - started, text


def raw_transcriber(model: Any, path: Path, *, batched: bool) -> Callable[[], str]:
    def run() -> str:
        if batched:
            from faster_whisper import BatchedInferencePipeline

            segments, _info = BatchedInferencePipeline(model).transcribe(
                str(path), batch_size=BATCH_SIZE, vad_filter=True
            )
        else:
            segments, _info = model.transcribe(str(path))
        return "".join(segment.text for segment in segments).strip()

    return run


def server_transcriber(server: Server, model_id: str, path: Path, **form: str) -> Callable[[], str]:
    def run() -> str:
        with path.open("rb") as audio:
            response = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": (path.name, audio)},
                data={"model": model_id, **form},
                timeout=1800,
            )
        response.raise_for_status()
        return str(response.json()["text"])

    return run


def take_turns(rounds: int, raw: Callable[[], str], server: Callable[[], str]) -> Timings:
    timings = Timings()
    for round_number in range(rounds):
        # Alternate who goes first, so a drift in load does not always favour one side.
        order = [("raw", raw), ("server", server)]
        for side, fn in order if round_number % 2 == 0 else reversed(order):
            seconds, text = timed(fn)
            getattr(timings, side).append(seconds)
            setattr(timings, f"{side}_text", text)
    return timings


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "OVER TARGET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--rounds", type=int, default=5, help="rounds on jfk.flac")
    parser.add_argument("--long-rounds", type=int, default=2, help="rounds on the long file")
    parser.add_argument("--long-seconds", type=float, default=300.0)
    args = parser.parse_args()

    env = base_server_env()
    os.environ.update(env)
    settings = Settings(bundled_models_cache_dir=Path(env["BUNDLED_MODELS_CACHE_DIR"]))
    # The raw library encodes every window at 30 s, whatever WHISPER__CONTENT_WINDOWS says here.
    settings.whisper.content_windows = "off"
    load_before = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load_before}")

    with tempfile.TemporaryDirectory(prefix="bench-transcription-") as folder:
        long_path, long_reference = make_long_file(Path(folder), args.long_seconds)
        long_seconds = len(decode_audio(long_path)) / 16_000
        print(f"long file: {long_seconds:.0f} s")
        results: dict[str, dict[str, Timings]] = {}
        with Server({"STT_MODEL_TTL": "-1"}) as server:
            for model_id in args.models:
                model = load_whisper_model(ModelRef(Kind.STT, model_id), settings).model
                server_transcriber(server, model_id, JFK)()  # load it in the server too
                raw_transcriber(model, JFK, batched=False)()  # and warm the raw one up
                runs = results[model_id] = {}
                runs["jfk"] = take_turns(
                    args.rounds, raw_transcriber(model, JFK, batched=False), server_transcriber(server, model_id, JFK)
                )
                runs["long sequential"] = take_turns(
                    args.long_rounds,
                    raw_transcriber(model, long_path, batched=False),
                    server_transcriber(server, model_id, long_path, vad_filter="false"),
                )
                runs["long batched"] = take_turns(
                    args.long_rounds,
                    raw_transcriber(model, long_path, batched=True),
                    server_transcriber(server, model_id, long_path),
                )
                # Batched mode is never used for a clip this short by the server; raw shows what it would give.
                jfk_batched_text = raw_transcriber(model, JFK, batched=True)()
                model.model.unload_model()
                del model
                report_model(model_id, runs, jfk_batched_text, long_reference)

    print(f"\nload average before {load_before}, after {os.getloadavg()}")


def report_model(model_id: str, runs: dict[str, Timings], jfk_batched_text: str, long_reference: str) -> None:
    jfk, sequential, batched = runs["jfk"], runs["long sequential"], runs["long batched"]
    print(f"\n== {model_id}")
    print(f"{'case':<18} {'raw s':>8} {'server s':>9} {'server/raw':>11}  target")
    for name, timings in (("jfk.flac", jfk), ("long sequential", sequential), ("long batched", batched)):
        print(
            f"{name:<18} {statistics.median(timings.raw):8.2f} {statistics.median(timings.server):9.2f} "
            f"{timings.ratio:11.3f}  <= {SERVER_TARGET} {verdict(timings.ratio, SERVER_TARGET)}"
        )
    batched_vs_raw_batched = statistics.median(batched.server) / statistics.median(batched.raw)
    speedup = statistics.median(sequential.server) / statistics.median(batched.server)
    print(
        f"long, server batched / raw batched: {batched_vs_raw_batched:.3f} "
        f"(<= {BATCHED_TARGET} {verdict(batched_vs_raw_batched, BATCHED_TARGET)}); "
        f"batched is {speedup:.2f}x faster than sequential through the server"
    )
    print(
        f"WER jfk: sequential {word_error_rate(JFK_TEXT, jfk.raw_text):.3f}, "
        f"batched {word_error_rate(JFK_TEXT, jfk_batched_text):.3f}; "
        f"WER long: sequential {word_error_rate(long_reference, sequential.server_text):.3f}, "
        f"batched {word_error_rate(long_reference, batched.server_text):.3f} (server), "
        f"raw sequential {word_error_rate(long_reference, sequential.raw_text):.3f}, "
        f"raw batched {word_error_rate(long_reference, batched.raw_text):.3f}"
    )


if __name__ == "__main__":
    main()
