"""Many clients at once: what cross-request batching buys, against the same server without it, in one run.

Two servers run side by side, identical but for `WHISPER__MAX_BATCH_SIZE` (8: batching; 1: off, each
call decoded alone as before), both with `INFERENCE_CONCURRENCY=8` so that eight jobs can reach the
model at once. For each model (default: the bundled tiny.en and base):

- HTTP: jfk.flac (11 s) posted to /v1/audio/transcriptions (json) by 1 client (request by request to
  each server in turn), then by 8 concurrent clients, each sending its next request when the last is
  answered (2 each per turn). Requests/s and median latency.
  Targets: 8 clients reach >= 1.6x the single-client requests/s on the batching server, and its
  single-client latency stays within 5% of the server without batching.
- live: 4 WebSocket sessions at once, each streaming bench/live.py's 45 s of speech at real time.
  Median word latency (from the frame holding a word's end to the message that confirmed it) and the
  final transcript's word error rate, per session. Targets: median <= 3 s and WER <= 0.10 for each.

- raw CTranslate2, in this process: 8 windows of jfk.flac through the encoder, and then through
  beam-search decoding, as one call of 8 against 8 calls of 1 (CPU seconds and wall time, taking
  turns). This is why the queue merges encoder passes only off the CPU, and what decoding saves.

Phases take turns (batching, then off, then batching again...), so a drift in machine load hits both
servers alike; the figures are medians over the rounds. The load average is printed with every figure:
on a busy machine wall-clock figures mean little, because a process's share of a loaded CPU grows with
its number of runnable threads. The server's CPU seconds per request (from /proc) do not depend on the
load: they show what batching saves in compute.

Run from the repository root: ``uv run python -m bench.concurrency [--models M ...] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

import httpx
from bench.live import REFERENCE, bench_audio, live_run
from tests.helpers import AUDIO_DIR, BASE, JFK_TEXT, TINY_EN, Server, base_server_env, word_error_rate
from tests.live.live_client import float_to_pcm, live_url

JFK = AUDIO_DIR / "jfk.flac"
CLIENTS = 8
SESSIONS = 4
THROUGHPUT_TARGET = 1.6
SINGLE_LATENCY_TARGET = 1.05
LIVE_LATENCY_TARGET = 3.0
LIVE_WER_TARGET = 0.10


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


@dataclass
class Phase:
    requests: int
    seconds: float
    latencies: list[float]
    wrong: int
    cpu_seconds: float
    """The server process's CPU time (user and system, all threads) over the phase."""

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass
class Figures:
    single: list[Phase] = field(default_factory=list)
    many: list[Phase] = field(default_factory=list)

    def rate(self, phases: list[Phase]) -> float:
        return statistics.median(phase.per_second for phase in phases)

    def latency(self, phases: list[Phase]) -> float:
        return statistics.median(latency for phase in phases for latency in phase.latencies)

    def cpu(self, phases: list[Phase]) -> float:
        return sum(phase.cpu_seconds for phase in phases) / sum(phase.requests for phase in phases)


def cpu_seconds(server: Server) -> float:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post_jfk(client: httpx.Client, server: Server, model: str) -> tuple[float, bool]:
    started = time.perf_counter()
    with JFK.open("rb") as audio:
        response = client.post(
            f"{server.url}/v1/audio/transcriptions", files={"file": ("jfk.flac", audio)}, data={"model": model}
        )
    response.raise_for_status()
    return time.perf_counter() - started, word_error_rate(JFK_TEXT, response.json()["text"]) <= 0.1


def closed_loop(server: Server, model: str, clients: int, requests_each: int) -> Phase:
    """`clients` clients, each sending `requests_each` requests one after another."""

    def client_run(_: int) -> list[tuple[float, bool]]:
        with httpx.Client(timeout=600) as client:
            return [post_jfk(client, server, model) for _ in range(requests_each)]

    started, cpu_before = time.perf_counter(), cpu_seconds(server)
    with concurrent.futures.ThreadPoolExecutor(clients) as workers:
        outcomes = [outcome for run in workers.map(client_run, range(clients)) for outcome in run]
    seconds, cpu = time.perf_counter() - started, cpu_seconds(server) - cpu_before
    latencies = [latency for latency, _ in outcomes]
    return Phase(len(outcomes), seconds, latencies, sum(not ok for _, ok in outcomes), cpu)


async def live_sessions(server: Server, model: str, pcm: bytes) -> tuple[list[tuple[float, float]], float]:
    """(median word latency, WER) of each of SESSIONS sessions streamed at once in real time, and the
    server's CPU seconds per second of audio per session."""
    url = live_url(server.url, model=model, response_format="verbose_json", language="en")
    cpu_before = cpu_seconds(server)
    runs = await asyncio.gather(*(live_run(url, pcm, 1.0) for _ in range(SESSIONS)))
    audio_seconds = SESSIONS * len(pcm) / 2 / 16_000
    per_session = [(statistics.median(run.latencies), word_error_rate(REFERENCE, run.text)) for run in runs]
    return per_session, (cpu_seconds(server) - cpu_before) / audio_seconds


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def paired_single_client(servers: dict[str, Server], model: str, requests: int) -> tuple[dict[str, Phase], float]:
    """One client's requests, alternating between the servers request by request (the first server of each
    pair alternates too): each server's phase, and the median over pairs of the first server's latency over
    the second's. Pairs taken moments apart see the same machine load."""
    names = list(servers)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    wrong = dict.fromkeys(names, 0)
    cpu_before = {name: cpu_seconds(server) for name, server in servers.items()}
    with httpx.Client(timeout=600) as client:
        for index in range(requests):
            for name in names if index % 2 == 0 else reversed(names):
                seconds, ok = post_jfk(client, servers[name], model)
                latencies[name].append(seconds)
                wrong[name] += not ok
    phases = {
        name: Phase(
            requests, sum(latencies[name]), latencies[name], wrong[name], cpu_seconds(servers[name]) - cpu_before[name]
        )
        for name in names
    }
    ratios = [first / second for first, second in zip(latencies[names[0]], latencies[names[1]], strict=True)]
    return phases, statistics.median(ratios)


def bench_model(servers: dict[str, Server], model: str, rounds: int, requests: int, live: bool) -> None:
    print(f"\n== {model}")
    with httpx.Client(timeout=600) as client:
        for server in servers.values():
            post_jfk(client, server, model)  # load the model
    figures = {name: Figures() for name in servers}
    singles, single_ratio = paired_single_client(servers, model, requests)
    for name, phase in singles.items():
        figures[name].single.append(phase)
    print(f"  1 client, {requests} requests to each server in turn; load {load()}")
    for round_number in range(rounds):
        order = list(servers.items()) if round_number % 2 == 0 else list(reversed(servers.items()))
        for name, server in order:
            many = closed_loop(server, model, CLIENTS, 2)
            figures[name].many.append(many)
            print(
                f"  round {round_number + 1} {name:<11} {CLIENTS} clients {many.per_second:.2f} req/s "
                f"({many.requests} requests, {many.wrong} wrong); load {load()}"
            )
    on, off = figures["batching"], figures["no batching"]
    print(
        f"  {'server':<12} {'1 client req/s':>14} {'p50 s':>6} {'CPU s/req':>9}   "
        f"{f'{CLIENTS} clients req/s':>16} {'p50 s':>6} {'CPU s/req':>9}  {'ratio':>6}"
    )
    for name, result in figures.items():
        ratio = result.rate(result.many) / result.rate(result.single)
        print(
            f"  {name:<12} {result.rate(result.single):>14.2f} {result.latency(result.single):>6.2f} "
            f"{result.cpu(result.single):>9.3f}   {result.rate(result.many):>16.2f} "
            f"{result.latency(result.many):>6.2f} {result.cpu(result.many):>9.3f}  {ratio:>5.2f}x"
        )
    ratio = on.rate(on.many) / on.rate(on.single)
    gain = on.rate(on.many) / off.rate(off.many)
    saved = 1 - on.cpu(on.many) / off.cpu(off.many)
    met = verdict(ratio >= THROUGHPUT_TARGET)
    print(f"  {CLIENTS} clients / 1 client with batching: {ratio:.2f}x (target >= {THROUGHPUT_TARGET}x: {met})")
    print(f"  {CLIENTS} clients, batching / without: {gain:.2f}x requests/s, {saved:.0%} less CPU per request")
    print(
        f"  single-client latency, batching / without (median of pairs): {single_ratio:.3f} "
        f"(target <= {SINGLE_LATENCY_TARGET}: {verdict(single_ratio <= SINGLE_LATENCY_TARGET)}); load {load()}"
    )
    if not live:
        return
    pcm = float_to_pcm(bench_audio())
    for name, server in servers.items():
        sessions, cpu_per_audio_second = asyncio.run(live_sessions(server, model, pcm))
        met = all(latency <= LIVE_LATENCY_TARGET and wer <= LIVE_WER_TARGET for latency, wer in sessions)
        described = ", ".join(f"{latency:.2f} s / {wer:.1%}" for latency, wer in sessions)
        print(
            f"  live, {SESSIONS} sessions at real time, {name}: median word latency / WER per session: {described} "
            f"(targets <= {LIVE_LATENCY_TARGET} s, <= {LIVE_WER_TARGET:.0%}: {verdict(met)}); "
            f"{cpu_per_audio_second:.3f} CPU s per audio second; load {load()}"
        )


def raw_ctranslate2(model_id: str, rounds: int) -> None:
    """8 windows as one CTranslate2 call against 8 calls of one, for the encoder and for decoding."""
    import ctranslate2
    import numpy as np
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    from speaches.audio.decoding import decode_audio
    from speaches.config import Settings
    from speaches.models.catalog import Kind, ModelRef
    from speaches.transcription.whisper import load_whisper_model

    settings = Settings(whisper={"max_batch_size": 1})
    whisper = load_whisper_model(ModelRef(Kind.STT, model_id), settings).model
    features = pad_or_trim(whisper.feature_extractor(decode_audio(JFK))[..., :-1])
    tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language="en")
    prompt = whisper.get_prompt(tokenizer, [], without_timestamps=False)
    encoded = np.asarray(whisper.encode(features))
    one, eight = (
        ctranslate2.StorageView.from_array(encoded),
        ctranslate2.StorageView.from_array(np.concatenate([encoded] * CLIENTS)),
    )
    stacked = np.stack([features] * CLIENTS)
    options = {"beam_size": 5, "return_scores": True, "return_no_speech_prob": True}
    cases = {
        "encoder": (
            lambda: [whisper.encode(features) for _ in range(CLIENTS)],
            lambda: whisper.encode(stacked),
        ),
        "decoding (beam 5)": (
            lambda: [whisper.model.generate(one, [prompt], **options) for _ in range(CLIENTS)],
            lambda: whisper.model.generate(eight, [prompt] * CLIENTS, **options),
        ),
    }
    print(f"\n== raw CTranslate2, {model_id}: {CLIENTS} windows as {CLIENTS} calls of 1 / as 1 call of {CLIENTS}")
    for name, (separate, together) in cases.items():
        timings: dict[str, list[tuple[float, float]]] = {"separate": [], "together": []}
        for round_number in range(rounds):
            order = [("separate", separate), ("together", together)]
            for side, work in order if round_number % 2 == 0 else reversed(order):
                started, cpu = time.perf_counter(), time.process_time()
                work()
                timings[side].append((time.perf_counter() - started, time.process_time() - cpu))
        wall = {side: statistics.median(w for w, _ in runs) for side, runs in timings.items()}
        cpu_time = {side: statistics.median(c for _, c in runs) for side, runs in timings.items()}
        print(
            f"  {name}: wall {wall['separate']:.2f} s / {wall['together']:.2f} s "
            f"(one call {wall['together'] / wall['separate']:.2f}x), CPU {cpu_time['separate']:.2f} s / "
            f"{cpu_time['together']:.2f} s ({cpu_time['together'] / cpu_time['separate']:.2f}x); load {load()}"
        )
    whisper.model.unload_model()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[TINY_EN, BASE])
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes with 8 clients, per model")
    parser.add_argument("--requests", type=int, default=12, help="single-client requests to each server")
    parser.add_argument("--no-live", action="store_true", help="skip the live sessions")
    parser.add_argument("--raw-only", action="store_true", help="only the raw CTranslate2 comparison")
    args = parser.parse_args()
    if args.raw_only:
        for model in args.models:
            raw_ctranslate2(model, max(args.rounds, 2))
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load {load()}")
    common = {**base_server_env(), "STT_MODEL_TTL": "-1", "INFERENCE_CONCURRENCY": str(CLIENTS)}
    with (
        Server({**common, "WHISPER__MAX_BATCH_SIZE": "8"}) as batching,
        Server({**common, "WHISPER__MAX_BATCH_SIZE": "1"}) as unbatched,
    ):
        for model in args.models:
            bench_model(
                {"batching": batching, "no batching": unbatched}, model, args.rounds, args.requests, not args.no_live
            )
    for model in args.models:
        raw_ctranslate2(model, max(args.rounds, 2))
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    main()
