"""Issue 11.5: model I/O (loads, downloads, cache scans, Hub listings) runs in its own bounded pool. A Hub
that accepts connections and never answers holds no thread that transcriptions or loads need, concurrent
listings share one Hub request per kind, and a listing that times out stops its own work."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, running_server, word_error_rate

pytestmark = pytest.mark.server


@dataclass
class SilentHub:
    """Accepts connections, reads what comes, answers nothing; notes when each connection was closed."""

    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    opened: list[float] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.opened.append(time.monotonic())
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        with connection:
            while True:
                try:
                    if not connection.recv(65536):
                        break
                except OSError:
                    break
        self.closed.append(time.monotonic())


@pytest.fixture
def silent_hub() -> Iterator[SilentHub]:
    hub = SilentHub()
    threading.Thread(target=hub.serve, daemon=True).start()
    yield hub
    hub.sock.close()


def test_a_silent_hub_holds_nothing_that_inference_needs(silent_hub: SilentHub, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": silent_hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path), "STT_MODEL_TTL": "-1"}
    with running_server(env) as server, ThreadPoolExecutor(8) as listers:
        done = threading.Event()
        started = time.monotonic()

        def keep_listing() -> list[httpx.Response]:
            answers = []
            while not done.is_set():
                answers.append(httpx.get(f"{server.url}/v1/registry", timeout=90))
            return answers

        listings = [listers.submit(keep_listing) for _ in range(8)]
        time.sleep(1.0)
        try:
            # While listings wait on the Hub, everything that needs no Hub works: a first load, a
            # transcription, speech, the model list.
            client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
            with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
                text = client.audio.transcriptions.create(file=audio, model=TINY_EN).text
            assert word_error_rate(JFK_TEXT, text) < 0.15
            assert client.audio.speech.create(model="tts-1", voice="alloy", input="Still speaking.").content
            assert TINY_EN in {model.id for model in client.models.list().data}
        finally:
            done.set()
        answers = [answer for listing in listings for answer in listing.result(timeout=120)]
        elapsed = time.monotonic() - started
        for response in answers:
            assert response.status_code == 200
            body = response.json()
            assert any("Hugging Face Hub failed" in message for message in body["hub_errors"]), body
            assert TINY_EN in {model["id"] for model in body["data"]}
        answered = time.monotonic()
    # The listings waiting at once shared one Hub request per kind (15 s each), however many there were.
    assert len(answers) >= 8
    assert len(silent_hub.opened) <= 2 * (elapsed // 15 + 1), (len(silent_hub.opened), elapsed)
    # And each gave up on the Hub at its deadline: no connection is left open.
    deadline = time.monotonic() + 10
    while len(silent_hub.closed) < len(silent_hub.opened) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(silent_hub.closed) == len(silent_hub.opened)
    assert max(silent_hub.closed) < answered + 5
