"""Issue 11.8 (names): with MODELS_DIR set, a 300-character voice or model name is a clear 4xx everywhere a
client can send one, never a 500 from a file name the OS refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.helpers import Server, running_server

pytestmark = pytest.mark.server

LONG = "a" * 300
LONG_VOICE = f"en_US-{'x' * 290}-medium"


@pytest.fixture(scope="module")
def models_dir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models_dir: Path = tmp_path_factory.mktemp("models")
    with running_server({"MODELS_DIR": str(models_dir)}) as server:
        yield server


def assert_client_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("name", [LONG, LONG_VOICE])
def test_long_names_are_client_errors(models_dir_server: Server, name: str) -> None:
    url = models_dir_server.url
    for body in (
        {"model": "tts-1", "voice": name, "input": "Hello."},
        {"model": name, "voice": "alloy", "input": "Hello."},
    ):
        assert_client_error(httpx.post(f"{url}/v1/audio/speech", json=body, timeout=60))
    upload = {"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")}
    assert_client_error(httpx.post(f"{url}/v1/audio/transcriptions", data={"model": name}, files=upload, timeout=60))
    for method in ("GET", "POST", "DELETE"):
        assert_client_error(httpx.request(method, f"{url}/v1/models/{name}", timeout=60))
    for method in ("POST", "DELETE"):
        assert_client_error(httpx.request(method, f"{url}/api/ps/{name}", timeout=60))
    with connect(f"{url.replace('http://', 'ws://')}/v1/audio/transcriptions?model={name}", open_timeout=30) as ws:
        message = json.loads(ws.recv(timeout=30))
        assert message["type"] == "error", message
    assert "Traceback" not in models_dir_server.logs()
