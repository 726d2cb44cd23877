"""Encoding a window as its audio (`WHISPER__CONTENT_WINDOWS=all`) against faster-whisper's full 30 s window, in
one run.

Both models are loaded in this process by the server's loader with the same CTranslate2 settings (one
worker, `--threads` threads), once as the raw library (`WHISPER__CONTENT_WINDOWS=off`) and once with
`WHISPER__CONTENT_WINDOWS=all`; each case runs on both in turns, `--rounds` times, and the best time of each
counts:

- uploads: the shared clips (lamp 3 s, jfk 11 s, the 30.3 s licence reading) transcribed as the server
  does below 30 s (sequential, beam 5, temperature 0, no previous text), and the French clip translated
  (base only);
- live steps: `speaches.live.hearing.transcribe_buffer` (greedy, word timestamps, VAD) on buffers of 2 to
  20 s of the live benchmark's audio, as a live session's step hears them.

Printed per case: seconds for each, their ratio (content / full: below 1 is faster), the word error rate
of each against the reference (uploads) and between the two transcripts (both).

`--utterances`: besides, every checked piper utterance of the accuracy benchmark (bench/accuracy_audio.py,
2-8 s each; kept only where both models, with full windows and beam 5, heard them word for word) and the
two real clips, each alone: as an upload (beam 5) and as a live step with 0.3-1.5 s of silence after it;
total word error rate and seconds for each kind of window, and how many transcripts gained a "thank you".
Run from the repository root: ``uv run python -m bench.content_window [--utterances]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench.live import bench_audio
from tests.helpers import (
    AUDIO_DIR,
    BASE,
    FRENCH_TRANSLATION,
    JFK_TEXT,
    LAMP_TEXT,
    LICENCE_TEXT,
    TINY_EN,
    base_server_env,
    word_error_rate,
)

from speaches.audio.decoding import decode_audio
from speaches.config import Settings
from speaches.live.hearing import transcribe_buffer
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.whisper import load_whisper_model

SAMPLE_RATE = 16_000
LIVE_BUFFER_SECONDS = (2, 5, 10, 15, 20)


def best_of(rounds: int, run: Callable[[], str]) -> tuple[float, str]:
    best, text = float("inf"), ""
    for _ in range(rounds):
        started = time.perf_counter()
        text = run()
        best = min(best, time.perf_counter() - started)
    return best, text


def upload(model: object, audio: np.ndarray, language: str, task: str) -> Callable[[], str]:
    def run() -> str:
        segments, _info = model.transcribe(  # type: ignore[attr-defined]
            audio, language=language, task=task, temperature=0.0, condition_on_previous_text=False
        )
        return "".join(segment.text for segment in segments).strip()

    return run


def live_step(model: object, audio: np.ndarray) -> Callable[[], str]:
    def run() -> str:
        hypothesis = transcribe_buffer(model, audio, "en", "")  # type: ignore[arg-type]
        return "".join(word.word for word in hypothesis.words).strip()

    return run


def load(model_id: str, *, trim: bool, threads: int) -> object:
    settings = Settings()
    settings.whisper.content_windows = "all" if trim else "off"
    settings.whisper.max_batch_size = 1
    settings.whisper.num_workers = 1
    settings.whisper.cpu_threads = threads
    return load_whisper_model(ModelRef(Kind.STT, model_id), settings).model


def utterances_run(model_id: str, threads: int) -> None:
    import jiwer
    from bench.accuracy_audio import real_utterances, synthesized_utterances
    from tests.helpers import normalize

    settings = Settings()
    utterances = synthesized_utterances(settings, Path.home() / ".cache" / "speaches" / "bench-accuracy")
    utterances += real_utterances()
    rng = np.random.default_rng(0)
    silences = [np.zeros(round(rng.uniform(0.3, 1.5) * SAMPLE_RATE), dtype=np.float32) for _ in utterances]
    references = [normalize(utterance.text) for utterance in utterances]
    print(f"\n== {model_id}: {len(utterances)} utterances alone, upload (beam 5) and live step (greedy)")
    for name, trim in (("full", False), ("content", True)):
        model = load(model_id, trim=trim, threads=threads)
        heard: dict[str, list[str]] = {"upload": [], "live step": []}
        seconds = {"upload": 0.0, "live step": 0.0}
        thanks = 0
        for utterance, silence in zip(utterances, silences, strict=True):
            for kind, run in (
                ("upload", upload(model, utterance.samples, "en", "transcribe")),
                ("live step", live_step(model, np.concatenate([utterance.samples, silence]))),
            ):
                started = time.perf_counter()
                text = normalize(run())
                seconds[kind] += time.perf_counter() - started
                heard[kind].append(text or "<empty>")
                thanks += "thank you" in text and "thank you" not in normalize(utterance.text)
        scores = ", ".join(
            f"{kind} WER {jiwer.wer(references, texts):.4f} in {seconds[kind]:.1f} s" for kind, texts in heard.items()
        )
        print(f"{name:<8} {scores}, thank-you added {thanks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[TINY_EN, BASE])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the one worker (the server's layout)")
    parser.add_argument("--utterances", action="store_true", help="also the accuracy benchmark's utterances alone")
    args = parser.parse_args()
    os.environ.update(base_server_env())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")

    clips = [
        ("lamp 3 s", decode_audio(AUDIO_DIR / "turn_on_the_living_room_lamp.wav"), LAMP_TEXT, "en", "transcribe"),
        ("jfk 11 s", decode_audio(AUDIO_DIR / "jfk.flac"), JFK_TEXT, "en", "transcribe"),
        (
            "licence 30.3 s",
            decode_audio(AUDIO_DIR / "multilingual.mp3")[: round(30.3 * SAMPLE_RATE)],
            LICENCE_TEXT,
            "en",
            "transcribe",
        ),
    ]
    french = decode_audio(AUDIO_DIR / "whats_your_name_french.wav")
    live_audio = bench_audio()
    total = {"full": 0.0, "content": 0.0}
    for model_id in args.models:
        models = {"full": load(model_id, trim=False, threads=args.threads)}
        models["content"] = load(model_id, trim=True, threads=args.threads)
        cases: list[tuple[str, str | None, Callable[[object], Callable[[], str]]]] = []
        for label, audio, reference, language, task in clips:
            cases.append((f"upload {label}", reference, lambda m, a=audio, la=language, t=task: upload(m, a, la, t)))
        if model_id == BASE:
            cases.append(("translate fr 1.6 s", FRENCH_TRANSLATION, lambda m: upload(m, french, "fr", "translate")))
        for seconds in LIVE_BUFFER_SECONDS:
            # Buffers ending at different places of the audio, as the steps of a session do.
            start = 7 * seconds % 20
            buffer = live_audio[start * SAMPLE_RATE : (start + seconds) * SAMPLE_RATE]
            cases.append((f"live step {seconds} s", None, lambda m, b=buffer: live_step(m, b)))
        print(f"\n== {model_id}, 1 worker x {args.threads} thread(s), best of {args.rounds}")
        print(f"{'case':<22} {'full s':>7} {'content s':>9} {'ratio':>6}  WER full / content / between")
        for label, reference, make in cases:
            runs = {name: make(model) for name, model in models.items()}
            runs["full"]()  # warm-up
            runs["content"]()
            (full_s, full_text), (content_s, content_text) = (best_of(args.rounds, runs[name]) for name in runs)
            total["full"] += full_s
            total["content"] += content_s
            between = word_error_rate(full_text, content_text) if full_text else float(bool(content_text))
            scored = (
                f"{word_error_rate(reference, full_text):.3f} / {word_error_rate(reference, content_text):.3f} / "
                if reference
                else "- / - / "
            )
            print(f"{label:<22} {full_s:7.3f} {content_s:9.3f} {content_s / full_s:6.2f}  {scored}{between:.3f}")
            if between > 0:
                print(f"    full:    {full_text!r}\n    content: {content_text!r}")
    if args.utterances:
        for model_id in args.models:
            utterances_run(model_id, args.threads)
    print(f"\nall cases: full {total['full']:.2f} s, content {total['content']:.2f} s, "
          f"ratio {total['content'] / total['full']:.2f}; load {os.getloadavg()}")  # fmt: skip


if __name__ == "__main__":
    main()
