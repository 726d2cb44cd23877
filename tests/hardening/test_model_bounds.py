"""Issue 11.3: models any client can summon are bounded: at most STT_MAX_LOADED_MODELS and
TTS_MAX_LOADED_MODELS in memory, the least recently used idle one unloaded to make room, and a clear 503
when every loaded one is in use."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import InternalServerError, OpenAI
from websockets.sync.client import connect

from tests.fake_hub import bundled_joe_voice, bundled_tiny_en_folder
from tests.hardening.observe import LONG_TEXT, VOICE, leases, wait_for
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, Server, running_server, word_error_rate

pytestmark = pytest.mark.server

OTHER_WHISPER = "local/tiny-copy"
OTHER_VOICE = "en_US-copy-medium"


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One model of each kind at a time; a second whisper model and voice under MODELS_DIR (hard links of the
    bundled ones, which MODELS_DIR takes as its own files, unlike symlinks that lead out of it)."""
    models_dir = tmp_path_factory.mktemp("models")
    whisper_copy = models_dir / OTHER_WHISPER
    whisper_copy.mkdir(parents=True)
    for file in bundled_tiny_en_folder().iterdir():
        if file.is_file():
            link_or_copy(file, whisper_copy / file.name)
    joe = bundled_joe_voice()
    link_or_copy(joe, models_dir / f"{OTHER_VOICE}.onnx")
    link_or_copy(joe.with_name(joe.name + ".json"), models_dir / f"{OTHER_VOICE}.onnx.json")
    env = {
        "MODELS_DIR": str(models_dir),
        "STT_MAX_LOADED_MODELS": "1",
        "TTS_MAX_LOADED_MODELS": "1",
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
        "SEND_TIMEOUT_SECONDS": "600",
    }
    with running_server(env) as server:
        yield server


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)


def loaded(server: Server) -> set[str]:
    return {model["id"] for model in httpx.get(f"{server.url}/api/ps", timeout=30).json()["models"]}


def transcribe(server: Server, model: str) -> str:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300)
    with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
        return client.audio.transcriptions.create(file=audio, model=model).text


def test_idle_models_make_room_least_recently_used_first(bounded_server: Server) -> None:
    server = bounded_server
    assert word_error_rate(JFK_TEXT, transcribe(server, TINY_EN)) < 0.15
    assert word_error_rate(JFK_TEXT, transcribe(server, OTHER_WHISPER)) < 0.15
    # The bound holds: the idle tiny.en went, the new one came.
    assert {TINY_EN, OTHER_WHISPER} & loaded(server) == {OTHER_WHISPER}
    assert f"unloading idle stt model {TINY_EN} to make room" in server.logs()


def test_all_loaded_models_busy_answers_503(bounded_server: Server) -> None:
    server = bounded_server
    ws_url = server.url.replace("http://", "ws://") + f"/v1/audio/transcriptions?model={TINY_EN}"
    # A live session holds its model for as long as it lasts.
    with connect(ws_url, open_timeout=120) as session:
        wait_for(lambda: leases(server, TINY_EN) == 1, 120, "the live session to hold tiny.en")
        client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
        with pytest.raises(InternalServerError) as refused, (AUDIO_DIR / "jfk.flac").open("rb") as audio:
            client.audio.transcriptions.create(file=audio, model=OTHER_WHISPER)
        assert refused.value.status_code == 503
        assert int(refused.value.response.headers["retry-after"]) >= 1
        error = refused.value.response.json()["error"]
        assert error["code"] == "model_capacity_reached"
        assert "STT_MAX_LOADED_MODELS" in error["message"]
        assert TINY_EN in error["message"]
        assert httpx.post(f"{server.url}/api/ps/{OTHER_WHISPER}", timeout=60).status_code == 503
        session.close()
    wait_for(lambda: leases(server, TINY_EN) == 0, 60, "the session to give tiny.en back")
    assert word_error_rate(JFK_TEXT, transcribe(server, OTHER_WHISPER)) < 0.15

    # Voices likewise: a speech stream that is still being read holds its voice.
    speech = {"model": "tts-1", "input": LONG_TEXT, "response_format": "pcm"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json={**speech, "voice": VOICE}, timeout=300) as held:
        assert held.status_code == 200
        other = httpx.post(f"{server.url}/v1/audio/speech", json={**speech, "voice": OTHER_VOICE}, timeout=120)
        assert other.status_code == 503, other.text
        assert other.json()["error"]["code"] == "model_capacity_reached"
        assert "TTS_MAX_LOADED_MODELS" in other.json()["error"]["message"]
    wait_for(lambda: leases(server, VOICE) <= 0, 60, "the stream to give the voice back")
    spoken = httpx.post(
        f"{server.url}/v1/audio/speech", json={**speech, "input": "Now it fits.", "voice": OTHER_VOICE}, timeout=120
    )
    assert spoken.status_code == 200
    assert VOICE not in loaded(server)
