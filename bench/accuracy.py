"""Transcription accuracy by decoding mode: word error rate, words kept and time, through the real server.

Audio (see bench/accuracy_audio.py): dense short sentences, the same with real speakers mixed in,
utterances between long silences, utterances between music-like noise, the earlier benchmark's
repeated file, and the shared clips; lengths from 30 s (`--seconds`) up to 20 min (`--long-seconds`,
dense audio only, the two main modes only). Every clip is sent as 16 kHz WAV.

Modes (`--modes`):

- `batched`, `sequential`: `POST /v1/audio/transcriptions` (json) on a server with batched mode on
  and off; `sequential-context`: sequential with `WHISPER__CONDITION_ON_PREVIOUS_TEXT=true`;
  `sequential-fallback`: that and `WHISPER__TEMPERATURE_FALLBACK=true`, sequential decoding as it was
  before issue 19 (faster-whisper's defaults);
- `batched-content-window`, `sequential-content-window`: the same two with `WHISPER__CONTENT_WINDOWS=all`,
  a short window encoded as its audio and a second of padding rather than at Whisper's full 30 s;
- `text`, `srt`, `vtt`, `verbose_json`, `stream`: the other response formats' code paths on a server
  with default settings (`--format-kinds` limits them to some kinds of audio);
- `raw-pipeline`: faster-whisper's `BatchedInferencePipeline` (batch 8, its defaults) in this process,
  what batched mode was before issue 19; `raw-sequential`: `WhisperModel.transcribe` with the library's
  defaults (temperature fallback on). Same model files and CTranslate2 settings as the server.

Requests in `batched`, `sequential` and `sequential-fallback` run `--repeats` times, the others once;
a mode is repeatable on a clip when every run gave the same text. Time is wall clock and CPU seconds of the process that
decoded (the server's, read from /proc), because the machine this runs on is shared and its load
moves the wall clock far more than the work. Results also go to bench/results/accuracy-*.json.

The verdict at the end applies issue 19's rule: batched mode may be the default only where its WER
stays within 0.02 of sequential decoding on every kind of audio measured.

Run from the repository root: ``uv run python -m bench.accuracy`` (all of it: over an hour on two
busy cores), or e.g. ``uv run python -m bench.accuracy --models Systran/faster-whisper-tiny.en
--kinds dense --seconds 90 --long-seconds 0 --modes batched sequential``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import jiwer
from bench.accuracy_audio import (
    KINDS,
    Recording,
    build_recording,
    real_utterances,
    shared_recordings,
    synthesized_utterances,
)
from tests.helpers import REPO_ROOT, Server, base_server_env, normalize

from speaches.config import Settings

MODELS = ["Systran/faster-whisper-tiny.en", "Systran/faster-whisper-base"]
SERVER_MODES: dict[str, tuple[dict[str, str], str]] = {
    # mode: (server settings, response_format)
    "batched": ({"WHISPER__USE_BATCHED_MODE": "true"}, "json"),
    "sequential": ({"WHISPER__USE_BATCHED_MODE": "false"}, "json"),
    "sequential-context": (
        {"WHISPER__USE_BATCHED_MODE": "false", "WHISPER__CONDITION_ON_PREVIOUS_TEXT": "true"},
        "json",
    ),
    "sequential-fallback": (
        {
            "WHISPER__USE_BATCHED_MODE": "false",
            "WHISPER__CONDITION_ON_PREVIOUS_TEXT": "true",
            "WHISPER__TEMPERATURE_FALLBACK": "true",
        },
        "json",
    ),
    # Short windows encoded as their audio (WHISPER__CONTENT_WINDOWS=all, opt-in).
    "batched-content-window": ({"WHISPER__USE_BATCHED_MODE": "true", "WHISPER__CONTENT_WINDOWS": "all"}, "json"),
    "sequential-content-window": (
        {"WHISPER__USE_BATCHED_MODE": "false", "WHISPER__CONTENT_WINDOWS": "all"},
        "json",
    ),
    "text": ({}, "text"),
    "srt": ({}, "srt"),
    "vtt": ({}, "vtt"),
    "verbose_json": ({}, "verbose_json"),
    "stream": ({}, "stream"),
}
FORMAT_MODES = ("text", "srt", "vtt", "verbose_json", "stream")
RAW_MODES = ("raw-pipeline", "raw-sequential")
ALL_MODES = (*SERVER_MODES, *RAW_MODES)
DEFAULT_MODES = ("batched", "sequential", "sequential-context", "sequential-fallback", *FORMAT_MODES, *RAW_MODES)
# Modes whose runs are repeated, to see whether the same request gives the same transcript.
REPEATED_MODES = ("batched", "sequential", "sequential-fallback")
WER_MARGIN = 0.02


@dataclasses.dataclass
class Run:
    model: str
    mode: str
    clip: str
    kind: str
    seconds: float
    wer: float
    words_kept: float
    """Reference words the transcript has right (jiwer's hits / reference words)."""
    words_out: int
    wall_s: float
    cpu_s: float
    load: float
    text: str


def score(reference: str, hypothesis: str) -> tuple[float, float, int]:
    ref, hyp = normalize(reference), normalize(hypothesis)
    measures = jiwer.process_words(ref, hyp or "<empty>")
    return float(measures.wer), measures.hits / len(ref.split()), len(hyp.split())


def transcript_of(response: httpx.Response, response_format: str) -> str:
    if response_format in ("json", "verbose_json"):
        return str(response.json()["text"])
    if response_format in ("srt", "vtt"):
        cues = []
        for line in response.text.splitlines():
            line = line.strip()
            if not line or line == "WEBVTT" or line.isdigit() or "-->" in line:
                continue
            cues.append(line)
        return " ".join(cues)
    if response_format == "stream":
        done = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        return next(str(event["text"]) for event in done if event.get("type") == "transcript.text.done")
    return response.text


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def server_request(
    server: Server, model_id: str, recording: Recording, response_format: str
) -> tuple[str, float, float]:
    assert server.process is not None
    form = {"model": model_id, "language": "en"}
    if response_format == "stream":
        form["stream"] = "true"
    else:
        form["response_format"] = response_format
    cpu_before = process_cpu_seconds(server.process.pid)
    started = time.perf_counter()
    response = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": (f"{recording.name}.wav", recording.wav_bytes(), "audio/wav")},
        data=form,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    response.raise_for_status()
    return transcript_of(response, response_format), wall, process_cpu_seconds(server.process.pid) - cpu_before


def raw_request(model: Any, mode: str, recording: Recording) -> tuple[str, float, float]:
    cpu_before, started = time.process_time(), time.perf_counter()
    if mode == "raw-pipeline":
        from faster_whisper import BatchedInferencePipeline

        segments, _info = BatchedInferencePipeline(model).transcribe(recording.samples, language="en", batch_size=8)
    else:
        segments, _info = model.transcribe(recording.samples, language="en")
    text = "".join(segment.text for segment in segments).strip()
    return text, time.perf_counter() - started, time.process_time() - cpu_before


def record(runs: list[Run], model_id: str, mode: str, recording: Recording, result: tuple[str, float, float]) -> None:
    text, wall, cpu = result
    wer, kept, words_out = score(recording.reference, text)
    run = Run(model_id, mode, recording.name, recording.kind, recording.seconds, wer, kept, words_out, wall, cpu,
              os.getloadavg()[0], text)  # fmt: skip
    runs.append(run)
    print(
        f"  {mode:<20} {recording.name:<24} WER {wer:.3f}  kept {kept:6.1%}  words {words_out:>5}  "
        f"{wall:7.1f} s wall  {cpu:7.1f} s CPU  load {run.load:.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=ALL_MODES)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--seconds", nargs="*", type=float, default=[300.0], help="lengths of each kind but shared")
    parser.add_argument(
        "--short-seconds", nargs="*", type=float, default=[30.0, 90.0], help="extra lengths of dense and dense-repeated"
    )
    parser.add_argument("--long-seconds", type=float, default=1200.0, help="one long dense clip; 0 for none")
    parser.add_argument("--format-kinds", nargs="+", default=["dense", "dense-repeated"], choices=KINDS)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each batched/sequential request")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "speaches" / "bench-accuracy")
    args = parser.parse_args()

    env = base_server_env()
    os.environ.update(env)
    settings = Settings(bundled_models_cache_dir=Path(env["BUNDLED_MODELS_CACHE_DIR"]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"arguments: {vars(args)}", flush=True)

    recordings = make_recordings(args, settings)
    long_clips = {recording.name for recording in recordings if recording.seconds > 600}
    runs: list[Run] = []
    for model_id in args.models:
        print(f"\n== {model_id}", flush=True)
        run_server_modes(args, model_id, recordings, long_clips, runs)
        run_raw_modes(args, model_id, recordings, settings, runs)
    print(f"\nuptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    summarize(runs, args.models)
    save(runs, args)


def make_recordings(args: argparse.Namespace, settings: Settings) -> list[Recording]:
    synthesized = synthesized_utterances(settings, args.cache_dir)
    real = real_utterances()
    recordings: list[Recording] = []
    for kind in args.kinds:
        if kind == "shared":
            recordings.extend(shared_recordings())
            continue
        lengths = [*args.short_seconds, *args.seconds] if kind in ("dense", "dense-repeated") else args.seconds
        if kind == "dense" and args.long_seconds > 0:
            lengths = [*lengths, args.long_seconds]
        recordings.extend(build_recording(kind, seconds, synthesized, real) for seconds in sorted(set(lengths)))
    for recording in recordings:
        words = len(normalize(recording.reference).split())
        print(f"audio {recording.name}: {recording.seconds:.1f} s, {recording.utterances} utterances, {words} words")
    return recordings


def run_server_modes(
    args: argparse.Namespace, model_id: str, recordings: list[Recording], long_clips: set[str], runs: list[Run]
) -> None:
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for mode in args.modes:
        if mode in SERVER_MODES:
            groups.setdefault(tuple(sorted(SERVER_MODES[mode][0].items())), []).append(mode)
    for settings_env, modes in groups.items():
        with Server({"STT_MODEL_TTL": "-1", **dict(settings_env)}) as server:
            server_request(server, model_id, shared_recordings()[0], "json")  # load the model first
            for recording in recordings:
                for mode in modes:
                    if not wanted(args, mode, recording, long_clips):
                        continue
                    response_format = SERVER_MODES[mode][1]
                    repeats = args.repeats if mode in REPEATED_MODES and recording.name not in long_clips else 1
                    for _ in range(repeats):
                        record(
                            runs,
                            model_id,
                            mode,
                            recording,
                            server_request(server, model_id, recording, response_format),
                        )


def wanted(args: argparse.Namespace, mode: str, recording: Recording, long_clips: set[str]) -> bool:
    if recording.name in long_clips:
        return mode in ("batched", "sequential")
    if mode in FORMAT_MODES:
        return recording.kind in args.format_kinds
    return True


def run_raw_modes(
    args: argparse.Namespace, model_id: str, recordings: list[Recording], settings: Settings, runs: list[Run]
) -> None:
    raw_modes = [mode for mode in args.modes if mode in RAW_MODES]
    if not raw_modes:
        return
    from speaches.models.catalog import Kind, ModelRef
    from speaches.transcription.whisper import load_whisper_model

    # The library as it is: no cross-request batching queue in front of CTranslate2, every window at 30 s.
    raw_whisper = settings.whisper.model_copy(update={"max_batch_size": 1, "content_windows": "off"})
    raw_settings = settings.model_copy(update={"whisper": raw_whisper})
    model = load_whisper_model(ModelRef(Kind.STT, model_id), raw_settings).model
    try:
        raw_request(model, "raw-sequential", shared_recordings()[0])  # warm up
        for recording in recordings:
            if recording.seconds > 600:
                continue
            for mode in raw_modes:
                record(runs, model_id, mode, recording, raw_request(model, mode, recording))
    finally:
        model.model.unload_model()


def summarize(runs: list[Run], models: list[str]) -> None:
    by_key: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        by_key.setdefault((run.model, run.clip, run.mode), []).append(run)
    modes = list(dict.fromkeys(run.mode for run in runs))
    clips = list(dict.fromkeys(run.clip for run in runs))
    for model_id in models:
        print(f"\n== {model_id}: WER (median over repeats; * = repeats disagreed), CPU s")
        print(f"{'clip':<24}" + "".join(f"{mode:>22}" for mode in modes))
        for clip in clips:
            cells = []
            for mode in modes:
                group = by_key.get((model_id, clip, mode))
                if not group:
                    cells.append(f"{'-':>22}")
                    continue
                agree = len({run.text for run in group}) == 1
                wer = statistics.median(run.wer for run in group)
                cpu = statistics.median(run.cpu_s for run in group)
                cells.append(f"{wer:.3f}{'' if agree else '*'} {cpu:7.1f}s".rjust(22))
            print(f"{clip:<24}" + "".join(cells))
        verdict(by_key, model_id, clips)


def verdict(by_key: dict[tuple[str, str, str], list[Run]], model_id: str, clips: list[str]) -> None:
    modes = list(dict.fromkeys(mode for (model, _clip, mode) in by_key if model == model_id))
    gaps: dict[str, tuple[float, str]] = {}
    for clip in clips:
        medians = {
            mode: statistics.median(run.wer for run in by_key[(model_id, clip, mode)])
            for mode in modes
            if (model_id, clip, mode) in by_key
        }
        best = min(medians.values(), default=0.0)
        for mode, wer in medians.items():
            if mode not in gaps or wer - best > gaps[mode][0]:
                gaps[mode] = (wer - best, clip)
    print("largest WER above the best mode on any clip:")
    for mode, (gap, clip) in gaps.items():
        print(f"  {mode:<20} {gap:+.3f} ({clip})")
    worst = None
    for clip in clips:
        batched, sequential = by_key.get((model_id, clip, "batched")), by_key.get((model_id, clip, "sequential"))
        if not batched or not sequential:
            continue
        gap = statistics.median(r.wer for r in batched) - statistics.median(r.wer for r in sequential)
        if worst is None or gap > worst[0]:
            worst = (gap, clip)
    if worst is not None:
        ok = "within" if worst[0] <= WER_MARGIN else "OVER"
        print(f"batched - sequential WER, worst clip: {worst[0]:+.3f} on {worst[1]} ({ok} the {WER_MARGIN} margin)")
    for mode in ("batched", "sequential", "sequential-fallback"):
        groups = [group for (model, _clip, m), group in by_key.items() if model == model_id and m == mode]
        repeated = [group for group in groups if len(group) > 1]
        if repeated:
            agreed = sum(len({run.text for run in group}) == 1 for group in repeated)
            print(f"{mode}: repeats agreed on {agreed} of {len(repeated)} clips")
    speedups = [
        statistics.median(r.cpu_s for r in by_key[(model_id, clip, "sequential")])
        / statistics.median(r.cpu_s for r in by_key[(model_id, clip, "batched")])
        for clip in clips
        if (model_id, clip, "batched") in by_key and (model_id, clip, "sequential") in by_key
    ]
    if speedups:
        print(f"sequential / batched CPU time: {min(speedups):.2f} to {max(speedups):.2f}")


def save(runs: list[Run], args: argparse.Namespace) -> None:
    folder = REPO_ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"accuracy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    arguments = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    path.write_text(json.dumps({"arguments": arguments, "runs": [dataclasses.asdict(run) for run in runs]}, indent=1))
    print(f"results: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
