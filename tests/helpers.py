"""Shared test helpers: a real server on a free port, word error rate, paths to the test audio."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import jiwer

REPO_ROOT = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO_ROOT / "tests" / "data"

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LAMP_TEXT = "Turn on the living room lamp."
# What the reader of multilingual.mp3 says for about its first 30 s (German follows): the MIT licence's first
# paragraph without its parenthesis (`(the "Software")`), which the reader skips.
LICENCE_TEXT = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated "
    "documentation files, to deal in the Software without restriction, including without limitation the rights to "
    "use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit "
    "persons to whom the Software is furnished to do so, subject to the following conditions: The above copyright "
    "notice and this permission notice shall be included in all copies or substantial portions of the Software."
)
GERMAN_TEXT = "Schalte das Wohnzimmerlicht ein."
FRENCH_TEXT = "Comment t'appelles-tu ?"
FRENCH_TRANSLATION = "How do you call yourself?"

TINY_EN = "Systran/faster-whisper-tiny.en"
BASE = "Systran/faster-whisper-base"


def normalize(text: str) -> str:
    """Lower case, punctuation (any script) removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text)
    return " ".join(text.split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`python -m speaches serve` in a subprocess on a free loopback port."""

    refusal: ClassVar[str | None] = None
    """Why no server may start now, if so: tests/conftest.py sets it while a test not marked `server` runs."""

    def __init__(self, env: dict[str, str] | None = None, *, log_dir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**base_server_env(), **(env or {})}
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="speaches-log-"))) / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Server:
        if Server.refusal is not None:
            raise RuntimeError(Server.refusal)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            # `speaches serve`, as deployed: same graceful shutdown (SHUTDOWN_GRACE_SECONDS, exit 0 on SIGTERM).
            [sys.executable, "-m", "speaches", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start within {timeout} s:\n{self.logs()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_bytes(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def logs(self) -> str:
        """The whole server log: tests count events in it, so it must never be cut."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


_SHARED_TMP = Path(tempfile.gettempdir()) / f"speaches-tests-{os.getuid()}"


def base_server_env() -> dict[str, str]:
    """Offline by default, with its own HF cache, sharing one assembled copy of the bundled base model."""
    _SHARED_TMP.mkdir(parents=True, exist_ok=True)
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(_SHARED_TMP / "hf-home"),
        "BUNDLED_MODELS_CACHE_DIR": str(_SHARED_TMP / "bundled"),
        "LOG_LEVEL": "info",
    }


@contextlib.contextmanager
def running_server(env: dict[str, str] | None = None) -> Iterator[Server]:
    server = Server(env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


ASCII_PUNCTUATION = set(string.punctuation)
