"""SIGTERM: the server stops accepting, lets running requests finish within SHUTDOWN_GRACE_SECONDS, cuts those
that outlast it, and exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import numpy as np
import pytest

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, Server, normalize
from tests.server.probes import SAMPLE_RATE, english_licence_reading, metric, wait_for, wav_bytes

pytestmark = pytest.mark.server


def _transcribe_in_thread(server: Server, audio: bytes) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            response = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("speech.wav", audio)},
                data={"model": TINY_EN},
                timeout=120,
            )
            outcome["status"] = response.status_code
            outcome["body"] = response.text
        except httpx.HTTPError as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_sigterm_lets_the_running_request_finish_then_exits_0() -> None:
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    audio = wav_bytes(np.concatenate([jfk, np.zeros(SAMPLE_RATE // 2, dtype=np.float32), english_licence_reading()]))
    env = {"WHISPER__USE_BATCHED_MODE": "false", "PRELOAD_MODELS": TINY_EN, "SHUTDOWN_GRACE_SECONDS": "60"}
    server = Server(env).start()
    try:
        wait_for(lambda: httpx.get(f"{server.url}/health/ready").status_code == 200, 120, "preloaded model")
        thread, outcome = _transcribe_in_thread(server, audio)
        wait_for(lambda: metric(server, "speaches_inference_running") >= 1, 30, "the transcription to start")
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health", timeout=2)  # no longer accepting
        thread.join(120)
        assert outcome.get("status") == 200, outcome
        text = normalize(json.loads(str(outcome["body"]))["text"])
        assert normalize(JFK_TEXT) in text
        assert "permission is hereby granted" in text
        assert server.process.wait(30) == 0, server.logs()
    finally:
        server.stop()


def test_sigterm_cuts_requests_that_outlast_the_grace_period() -> None:
    # 80 s of speech: about 8 s of work on an idle machine, against a grace period of 1 s.
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    audio = wav_bytes(np.tile(np.concatenate([english_licence_reading(), jfk]), 2))
    env = {"WHISPER__USE_BATCHED_MODE": "false", "PRELOAD_MODELS": TINY_EN, "SHUTDOWN_GRACE_SECONDS": "1"}
    server = Server(env).start()
    try:
        wait_for(lambda: httpx.get(f"{server.url}/health/ready").status_code == 200, 120, "preloaded model")
        thread, outcome = _transcribe_in_thread(server, audio)
        wait_for(lambda: metric(server, "speaches_inference_running") >= 1, 30, "the transcription to start")
        assert server.process is not None
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # The grace second, then the inference step in flight (a segment: seconds, more on a loaded
        # machine), then exit: the process waits for that thread, which cannot be interrupted.
        assert server.process.wait(45) == 0, server.logs()
        took = time.monotonic() - signalled
        thread.join(30)
        # Cut, not finished: the client saw its connection end without an answer.
        assert "error" in outcome or outcome.get("status", 0) >= 500, outcome
        print(f"exited {took:.1f} s after SIGTERM")
    finally:
        server.stop()
