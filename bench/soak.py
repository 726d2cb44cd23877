"""Soak test: many concurrent clients mixing every kind of work against one server, for minutes.

50 clients (``--clients``) loop until ``--duration`` seconds (default 600) have passed, each picking at
random: a transcription (JSON or SSE stream, the bundled tiny.en model, `jfk.flac`), a translation (the
bundled base model, the French clip), a speech request (mp3, opus or pcm, one or two sentences) or a live
WebSocket session (the lamp clip streamed at four times real time). Every answer is checked: the
transcript against its reference (word error rate), the audio's size and type, the live session's
final text. Traffic goes only to the server this script starts on 127.0.0.1.

A share of the clients (``--hostile``, default 10 of the 50) misbehave instead, each picking at random: a
stalled reader (a long speech request whose answer it never reads, held until the server drops it), a
flood (a 4 MiB JSON body, an upload declaring more than the upload limit, a burst of twenty model
listings) or bad frames on a live session (a text frame of 100,000 `[`, a frame over the frame limit,
a text frame that is no JSON). What they get is tallied apart and never counts as an error.

Reported: requests served, errors by kind for the well-behaved clients (429s from the bounded queue are
counted apart: they are the server protecting itself), latency percentiles per kind, the worst latency
of a /health probe sent every half second, and the server's resident memory sampled every few seconds:
after warm-up (10% of the run), in the middle and at the end. Targets: no errors for well-behaved
clients beyond deliberate 429s; memory at the end within 10% of memory after warm-up; /health always
under 0.5 s.

Run from the repository root: ``uv run python -m bench.soak [--duration 600] [--clients 50] [--hostile 10]``.
The machine's CPU may be shared with other work: latencies then say as much about that as about us.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from tests.helpers import AUDIO_DIR, BASE, FRENCH_TRANSLATION, JFK_TEXT, LAMP_TEXT, TINY_EN, Server, word_error_rate

from speaches.audio.decoding import decode_audio

VOICE = "en_US-joe-medium"
SENTENCES = [
    "The library opens at nine in the morning.",
    "Please keep your voice down in the reading rooms.",
    "Visitors can borrow up to ten books at a time, and return them at any branch.",
]
WEIGHTS = {"transcription": 4, "translation": 1, "speech": 4, "live": 1}
MAX_WER = 0.35
RSS_SAMPLE_SECONDS = 5.0


@dataclass
class Outcome:
    kind: str
    ok: bool
    seconds: float
    status: str
    detail: str = ""
    ended: float = 0.0
    """time.monotonic() when the answer (or the failure) came."""


@dataclass
class Stats:
    outcomes: list[Outcome] = field(default_factory=list)
    hostile: list[Outcome] = field(default_factory=list)
    """What the misbehaving clients got: tallied, never errors."""
    rss: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since start, resident bytes)"""
    health_seconds: list[float] = field(default_factory=list)


class Workload:
    def __init__(self, server_url: str) -> None:
        self.url = server_url
        self.jfk = (AUDIO_DIR / "jfk.flac").read_bytes()
        self.french = (AUDIO_DIR / "whats_your_name_french.wav").read_bytes()
        samples = decode_audio(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")
        self.lamp_pcm = (samples.clip(-1, 1) * 32767).astype("<i2").tobytes()

    async def transcription(self, client: httpx.AsyncClient, rng: random.Random) -> Outcome:
        stream = rng.random() < 0.3
        data = {"model": TINY_EN, "stream": "true" if stream else "false"}
        files = {"file": ("jfk.flac", self.jfk, "audio/flac")}
        started = time.perf_counter()
        if not stream:
            response = await client.post("/v1/audio/transcriptions", data=data, files=files)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                return Outcome("transcription", False, elapsed, str(response.status_code), response.text[:200])
            text = response.json()["text"]
        else:
            text = ""
            async with client.stream("POST", "/v1/audio/transcriptions", data=data, files=files) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    return Outcome(
                        "transcription-sse", False, time.perf_counter() - started, str(response.status_code), body[:200]
                    )
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if event.get("type") == "transcript.text.done":
                            text = event["text"]
            elapsed = time.perf_counter() - started
        wer = word_error_rate(JFK_TEXT, text)
        kind = "transcription-sse" if stream else "transcription"
        return Outcome(kind, wer <= MAX_WER, elapsed, "200", "" if wer <= MAX_WER else f"WER {wer:.2f}: {text!r}")

    async def translation(self, client: httpx.AsyncClient, _rng: random.Random) -> Outcome:
        started = time.perf_counter()
        response = await client.post(
            "/v1/audio/translations",
            data={"model": BASE},
            files={"file": ("french.wav", self.french, "audio/wav")},
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            return Outcome("translation", False, elapsed, str(response.status_code), response.text[:200])
        text = response.json()["text"]
        # Translation wording varies; the clip asks a name.
        ok = "name" in text.lower() or "call" in text.lower() or word_error_rate(FRENCH_TRANSLATION, text) <= 0.5
        return Outcome("translation", ok, elapsed, "200", "" if ok else repr(text))

    async def speech(self, client: httpx.AsyncClient, rng: random.Random) -> Outcome:
        response_format = rng.choice(["mp3", "opus", "pcm"])
        text = " ".join(rng.sample(SENTENCES, rng.choice([1, 2])))
        started = time.perf_counter()
        response = await client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "voice": VOICE, "input": text, "response_format": response_format},
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            return Outcome("speech", False, elapsed, str(response.status_code), response.text[:200])
        # At least half a second of audio: pcm is 24 kHz 16-bit; compressed formats are far smaller.
        minimum = 24_000 if response_format == "pcm" else 2_000
        ok = len(response.content) >= minimum
        return Outcome(
            "speech", ok, elapsed, "200", "" if ok else f"{len(response.content)} bytes of {response_format}"
        )

    async def live(self, _client: httpx.AsyncClient, _rng: random.Random) -> Outcome:
        url = self.url.replace("http://", "ws://") + f"/v1/audio/transcriptions?model={TINY_EN}"
        started = time.perf_counter()
        frame = 16_000 * 2 // 10  # 100 ms
        try:
            async with websockets.connect(url, open_timeout=60, close_timeout=30) as websocket:
                for start in range(0, len(self.lamp_pcm), frame):
                    await websocket.send(self.lamp_pcm[start : start + frame])
                    await asyncio.sleep(0.025)
                await websocket.send(json.dumps({"type": "end"}))
                final = None
                async for raw in websocket:
                    message = json.loads(raw)
                    if message.get("type") == "transcript.text.done":
                        final = message["text"]
                    elif message.get("type") == "error":
                        code = str(message["error"].get("code"))
                        return Outcome("live", False, time.perf_counter() - started, code, str(message["error"]))
        except websockets.ConnectionClosedError as closed:
            code = closed.rcvd.code if closed.rcvd else "closed"
            return Outcome("live", False, time.perf_counter() - started, str(code), str(closed))
        elapsed = time.perf_counter() - started
        if final is None:
            return Outcome("live", False, elapsed, "no-final", "")
        wer = word_error_rate(LAMP_TEXT, final)
        return Outcome("live", wer <= MAX_WER, elapsed, "ok", "" if wer <= MAX_WER else f"WER {wer:.2f}: {final!r}")


STALLED_TEXT = " ".join(
    f"Sentence {index} of an answer nobody reads, long enough to fill every buffer." for index in range(24)
)
HOSTILE_WEIGHTS = {"stalled_reader": 2, "flood": 2, "bad_frames": 1}
STALL_HOLD_SECONDS = 45.0


class Hostile:
    """Clients that misbehave: each method returns what the server did about it."""

    def __init__(self, server_url: str, port: int) -> None:
        self.url = server_url
        self.port = port

    async def stalled_reader(self, _client: httpx.AsyncClient, _rng: random.Random) -> Outcome:
        request = {"model": "tts-1", "voice": VOICE, "input": STALLED_TEXT, "response_format": "pcm"}
        body = json.dumps({**request, "sample_rate": 48000}).encode()
        head = (
            "POST /v1/audio/speech HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        started = time.perf_counter()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
            await asyncio.get_running_loop().sock_sendall(sock, head.encode() + body)
            await asyncio.sleep(STALL_HOLD_SECONDS)  # and read nothing, ever
        finally:
            sock.close()
        return Outcome("stalled_reader", True, time.perf_counter() - started, "held")

    async def flood(self, client: httpx.AsyncClient, rng: random.Random) -> Outcome:
        started = time.perf_counter()
        which = rng.choice(["big_json", "declared_huge_upload", "listing_burst"])
        if which == "big_json":
            big = json.dumps({"model": "tts-1", "voice": VOICE, "input": "a" * (4 * 2**20)})
            response = await client.post("/v1/audio/speech", content=big, headers={"Content-Type": "application/json"})
            status = str(response.status_code)
        elif which == "declared_huge_upload":
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: soak\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 999999999999\r\n\r\n"
            )
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 30)
            writer.close()
            status = line.decode(errors="replace").split(" ")[1] if line else "closed"
        else:
            answers = await asyncio.gather(*(client.get("/v1/models") for _ in range(20)))
            status = ",".join(sorted({str(answer.status_code) for answer in answers}))
        return Outcome(f"flood_{which}", True, time.perf_counter() - started, status)

    async def bad_frames(self, _client: httpx.AsyncClient, rng: random.Random) -> Outcome:
        url = self.url.replace("http://", "ws://") + f"/v1/audio/transcriptions?model={TINY_EN}"
        which = rng.choice(["brackets", "oversized", "not_json"])
        frame: str | bytes = {"brackets": "[" * 100_000, "oversized": b"\0" * (2 * 2**20), "not_json": "{nope"}[which]
        started = time.perf_counter()
        status = "no-answer"
        try:
            async with websockets.connect(url, open_timeout=60, close_timeout=10, max_size=None) as websocket:
                await websocket.send(frame)
                raw = await asyncio.wait_for(websocket.recv(), 30)
                status = str(json.loads(raw).get("type"))
        except websockets.ConnectionClosed as closed:
            status = f"closed-{closed.rcvd.code if closed.rcvd else 'none'}"
        except (TimeoutError, OSError) as error:
            status = type(error).__name__
        return Outcome(f"bad_frames_{which}", True, time.perf_counter() - started, status)


async def hostile_loop(index: int, hostile: Hostile, deadline: float, stats: Stats, seed: int) -> None:
    rng = random.Random(seed * 7919 + index)
    kinds = list(HOSTILE_WEIGHTS)
    weights = [HOSTILE_WEIGHTS[kind] for kind in kinds]
    async with httpx.AsyncClient(base_url=hostile.url, timeout=httpx.Timeout(120, connect=30)) as client:
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            started = time.perf_counter()
            try:
                outcome = await getattr(hostile, kind)(client, rng)
            except Exception as error:
                outcome = Outcome(kind, True, time.perf_counter() - started, type(error).__name__, str(error)[:200])
            stats.hostile.append(outcome)
            await asyncio.sleep(rng.uniform(0.5, 2.0))


# The /health probe runs in a process of its own, so that what it measures is the server, not this
# script's event loop, which is busy with fifty clients.
_HEALTH_PROBE = """
import json, sys, time, httpx
url, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
seconds = []
with httpx.Client(timeout=60) as client:
    while time.monotonic() < until:
        started = time.perf_counter()
        client.get(url + "/health")
        seconds.append(time.perf_counter() - started)
        time.sleep(0.5)
print(json.dumps(seconds))
"""


async def probe_health(url: str, stats: Stats, deadline: float) -> None:
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HEALTH_PROBE, url, str(deadline - time.monotonic()), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await probe.communicate()
    stats.health_seconds.extend(json.loads(output))


async def client_loop(index: int, workload: Workload, deadline: float, stats: Stats, seed: int) -> None:
    rng = random.Random(seed * 1000 + index)
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[kind] for kind in kinds]
    timeout = httpx.Timeout(600, connect=30)
    async with httpx.AsyncClient(base_url=workload.url, timeout=timeout) as client:
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            started = time.perf_counter()
            try:
                outcome = await getattr(workload, kind)(client, rng)
            except Exception as error:
                outcome = Outcome(kind, False, time.perf_counter() - started, type(error).__name__, str(error)[:200])
            outcome.ended = time.monotonic()
            stats.outcomes.append(outcome)
            if outcome.status == "429":
                # The server asked us to back off: honour it as a client should.
                await asyncio.sleep(1.0)


async def sample_rss(pids: list[int], stats: Stats, started: float, deadline: float) -> None:
    while time.monotonic() < deadline:
        stats.rss.append((time.monotonic() - started, rss_bytes(pids)))
        await asyncio.sleep(RSS_SAMPLE_SECONDS)


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes together; one that has exited (gone, or a zombie without
    VmRSS) counts as nothing."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        rss = (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
        total += next(rss, 0)
    return total


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def rss_at(stats: Stats, seconds: float) -> int:
    """The sample closest to `seconds` into the run."""
    return min(stats.rss, key=lambda sample: abs(sample[0] - seconds))[1]


def summarize(stats: Stats, duration: float, clients: int, hostile_clients: int = 0) -> dict[str, Any]:
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in stats.outcomes:
        by_kind[outcome.kind].append(outcome)
    busy = [o for o in stats.outcomes if o.status == "429"]
    errors = [o for o in stats.outcomes if not o.ok and o.status != "429"]
    kinds: dict[str, Any] = {}
    for kind, outcomes in sorted(by_kind.items()):
        served = [o.seconds for o in outcomes if o.ok]
        kinds[kind] = {
            "served": len(served),
            "errors": sum(1 for o in outcomes if not o.ok and o.status != "429"),
            "busy_429": sum(1 for o in outcomes if o.status == "429"),
            "latency_s": {
                "p50": round(statistics.median(served), 2) if served else None,
                "p90": round(percentile(served, 0.9), 2) if served else None,
                "p99": round(percentile(served, 0.99), 2) if served else None,
                "max": round(max(served), 2) if served else None,
            },
        }
    warm = rss_at(stats, duration * 0.1)
    middle = rss_at(stats, duration * 0.5)
    end = stats.rss[-1][1]
    return {
        "duration_s": duration,
        "clients": clients,
        "of_which_hostile": hostile_clients,
        "hostile": Counter(f"{o.kind} -> {o.status}" for o in stats.hostile).most_common(),
        "health_latency_s": {
            "p50": round(statistics.median(stats.health_seconds), 3) if stats.health_seconds else None,
            "max": round(max(stats.health_seconds), 3) if stats.health_seconds else None,
            "probes": len(stats.health_seconds),
        },
        "requests_served": sum(1 for o in stats.outcomes if o.ok),
        "errors": len(errors),
        "busy_429": len(busy),
        "error_examples": Counter(f"{o.kind} {o.status} {o.detail[:120]}" for o in errors).most_common(10),
        "by_kind": kinds,
        "rss_mb": {
            "first": round(stats.rss[0][1] / 2**20, 1),
            "after_warm_up": round(warm / 2**20, 1),
            "middle": round(middle / 2**20, 1),
            "end": round(end / 2**20, 1),
            "max": round(max(rss for _, rss in stats.rss) / 2**20, 1),
            "growth_after_warm_up": round(end / warm - 1, 3),
            # The trend, not one sample: the highest reading in each minute of the run.
            "max_per_minute": [
                round(max(rss for at, rss in stats.rss if minute * 60 <= at < (minute + 1) * 60) / 2**20, 1)
                for minute in range(int(stats.rss[-1][0] // 60) + 1)
                if any(minute * 60 <= at < (minute + 1) * 60 for at, _ in stats.rss)
            ],
        },
        "cpu_count": os.cpu_count(),
    }


async def drive(url: str, pids: list[int], duration: float, clients: int, seed: int, hostile_clients: int = 0) -> Stats:
    """The clients against `url` for `duration` seconds (`hostile_clients` of them misbehaving), sampling
    the memory of the `pids` serving it and the latency of /health."""
    workload = Workload(url)
    hostile = Hostile(url, int(url.rsplit(":", 1)[1]))
    stats = Stats()
    started = time.monotonic()
    deadline = started + duration
    sampler = asyncio.create_task(sample_rss(pids, stats, started, deadline))
    prober = asyncio.create_task(probe_health(url, stats, deadline))
    await asyncio.gather(
        *(client_loop(index, workload, deadline, stats, seed) for index in range(clients - hostile_clients)),
        *(hostile_loop(index, hostile, deadline, stats, seed) for index in range(hostile_clients)),
    )
    await sampler
    await prober
    stats.rss.append((time.monotonic() - started, rss_bytes(pids)))
    return stats


async def soak(server: Server, duration: float, clients: int, hostile_clients: int, seed: int) -> dict[str, Any]:
    assert server.process is not None
    stats = await drive(server.url, [server.process.pid], duration, clients, seed, hostile_clients)
    return summarize(stats, duration, clients, hostile_clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--hostile", type=int, default=10, help="how many of the clients misbehave (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the clients' choices")
    parser.add_argument("--output", type=Path, help="also write the summary here as JSON")
    args = parser.parse_args()

    env = {"PRELOAD_MODELS": f"{TINY_EN},{BASE},{VOICE}", "STT_MODEL_TTL": "-1", "TTS_MODEL_TTL": "-1"}
    with Server(env) as server:
        deadline = time.monotonic() + 300
        while httpx.get(f"{server.url}/health/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("models did not load within 300 s")
            time.sleep(0.5)
        summary = asyncio.run(soak(server, args.duration, args.clients, args.hostile, args.seed))
        summary["load_average"] = os.getloadavg()
        summary["server_alive"] = server.alive()
        metrics = httpx.get(f"{server.url}/metrics").text
        summary["metrics"] = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in metrics.splitlines()
            if line.startswith(("speaches_audio_seconds_total", "speaches_inference_", "speaches_models_loaded"))
        }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


if __name__ == "__main__":
    main()
