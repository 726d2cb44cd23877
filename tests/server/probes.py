"""Watching a server from outside, as an operator would: its CPU time in /proc/<pid>/stat, its open
file descriptors in /proc/<pid>/fd, the gauges on /metrics; and the long speech that keeps it busy.
"""

from __future__ import annotations

import io
import os
import time
import wave
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, Server

SAMPLE_RATE = 16_000


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def english_licence_reading() -> np.ndarray:
    """The English half of multilingual.mp3: varied speech that decodes without fallback retries."""
    return decode_audio(AUDIO_DIR / "multilingual.mp3")[: int(29.5 * SAMPLE_RATE)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(server: Server, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition()`; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def fds_under(pid: int, folder: Path) -> list[str]:
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            targets.append(target)
    return targets


def files_in(folder: Path) -> set[Path]:
    """What lies in a folder (onnxruntime leaves a `.ses` file in TMPDIR at startup: not ours to judge)."""
    return set(folder.iterdir())
