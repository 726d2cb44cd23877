"""Does memory come back after a model is unloaded? Resident memory of a real server around cycles of
load, use and unload.

For each model (the bundled multilingual base whisper model and the bundled piper voice
en_US-joe-medium), the server's RSS (VmRSS of /proc/<pid>/status) is read:

- before the load,
- after `POST /api/ps/{model}` and one real use (a transcription of jfk.flac / one sentence of speech),
- after the unload: `DELETE /api/ps/{model}`, or, every other cycle, the TTL (2 s) running out.

Target: after every unload, RSS within 50 MB of its value before that load. The very first load of
each kind also maps the inference library's code and builds caches that stay for the life of the
process (CTranslate2, onnxruntime); that round is reported apart as the warm-up.

`--compare` runs the same cycles on a second server that skips the allocator fix in
`speaches.models.manager.keep_large_allocations_returnable` (which defers to an explicit
`MALLOC_MMAP_THRESHOLD_`: the bench sets that variable inside Python only, through a sitecustomize,
after glibc has read its environment, so the allocator keeps glibc's dynamic threshold).

Run from the repository root: ``uv run python -m bench.memory [--cycles 4] [--compare]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.helpers import AUDIO_DIR, BASE, Server

MB = 1024 * 1024
TARGET_MB = 50
VOICE = "en_US-joe-medium"
TTL_SECONDS = 2


@dataclass
class Cycle:
    model: str
    how: str
    before: int
    in_use: int
    after: int

    @property
    def kept_mb(self) -> float:
        return (self.after - self.before) / MB

    def line(self, *, warm_up: bool = False) -> str:
        verdict = (
            "(warm-up: library code and caches that stay)" if warm_up else "ok" if self.kept_mb <= TARGET_MB else "OVER"
        )
        return (
            f"  {self.model:<30} {self.how:<7} before {self.before / MB:6.0f} MB   in use {self.in_use / MB:6.0f} MB"
            f"   after {self.after / MB:6.0f} MB   kept {self.kept_mb:+6.1f} MB  {verdict}"
        )


def transcribe(server: Server) -> None:
    with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
        response = httpx.post(
            f"{server.url}/v1/audio/transcriptions", files={"file": audio}, data={"model": BASE}, timeout=300
        )
    response.raise_for_status()


def speak(server: Server) -> None:
    body = {"model": "tts-1", "voice": VOICE, "input": "Memory comes back after an unload.", "response_format": "pcm"}
    httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120).raise_for_status()


def is_loaded(server: Server, model_id: str) -> bool:
    return any(model["id"] == model_id for model in httpx.get(f"{server.url}/api/ps").json()["models"])


def settled_rss(server: Server, previous: int) -> int:
    """RSS once it stops falling: freeing finishes just after /api/ps stops listing an expired model."""
    time.sleep(0.3)
    for _ in range(20):
        current = server.rss_bytes()
        if current >= previous - MB:
            return current
        previous = current
        time.sleep(0.2)
    return server.rss_bytes()


def cycle(server: Server, model_id: str, use: Callable[[Server], None], how: str) -> Cycle:
    before = server.rss_bytes()
    httpx.post(f"{server.url}/api/ps/{model_id}", timeout=300).raise_for_status()
    use(server)
    in_use = server.rss_bytes()
    if how == "DELETE":
        httpx.delete(f"{server.url}/api/ps/{model_id}").raise_for_status()
    else:
        deadline = time.monotonic() + 30
        while is_loaded(server, model_id):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{model_id} was not unloaded by its TTL")
            time.sleep(0.1)
    return Cycle(model_id, how, before, in_use, settled_rss(server, server.rss_bytes()))


def run(cycles: int, env: dict[str, str], label: str) -> list[Cycle]:
    print(f"\n{label}")
    results: list[Cycle] = []
    with Server({"STT_MODEL_TTL": str(TTL_SECONDS), "TTS_MODEL_TTL": str(TTL_SECONDS), **env}) as server:
        print(f"  idle server: {server.rss_bytes() / MB:.0f} MB")
        for model_id, use in ((BASE, transcribe), (VOICE, speak)):
            warm_up = cycle(server, model_id, use, "DELETE")
            print(warm_up.line(warm_up=True))
            for index in range(cycles):
                result = cycle(server, model_id, use, "DELETE" if index % 2 == 0 else "TTL")
                print(result.line())
                results.append(result)
    worst = max(result.kept_mb for result in results)
    print(f"  worst after warm-up: {worst:+.1f} MB (target <= {TARGET_MB} MB)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=4, help="cycles per model after the warm-up")
    parser.add_argument("--compare", action="store_true", help="also run without the allocator fix")
    args = parser.parse_args()

    fixed = run(args.cycles, {}, "speaches as shipped")
    if args.compare:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "sitecustomize.py").write_text(
                'import os\nos.environ["MALLOC_MMAP_THRESHOLD_"] = "left-to-glibc"\n'
            )
            run(args.cycles, {"PYTHONPATH": folder}, "without the allocator fix (glibc's dynamic mmap threshold)")
    if max(result.kept_mb for result in fixed) > TARGET_MB:
        raise SystemExit("memory did not come back within the target")


if __name__ == "__main__":
    main()
