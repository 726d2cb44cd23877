"""Downloading, deleting and listing models against a local fake Hugging Face Hub (tests/fake_hub.py),
through the HTTP API of a real server: POST/DELETE /v1/models, implicit downloads by a transcription,
GET /v1/registry, offline and unreachable hubs, and PRELOAD_MODELS waiting for a download."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.fake_hub import FakeHub
from tests.helpers import AUDIO_DIR, JFK_TEXT, Server, free_port, running_server, word_error_rate

pytestmark = pytest.mark.server

JFK = AUDIO_DIR / "jfk.flac"
PULLED = "speaches-test/faster-whisper-tiny.en"
IMPLICIT = "speaches-test/whisper-implicit"
DELETED = "speaches-test/whisper-to-delete"
PRELOADED = "speaches-test/whisper-preloaded"
# The bundled joe voice, served twice: under its own name (bundled, so never downloaded) and as a
# voice this server does not have.
HUB_VOICE = "en_GB-hubjoe-medium"
BUNDLED_VOICE = "en_US-joe-medium"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        for repo_id in (PULLED, IMPLICIT, DELETED, PRELOADED):
            fake.add_whisper_repo(repo_id)
        fake.add_piper_voice(BUNDLED_VOICE)
        fake.add_piper_voice(HUB_VOICE)
        yield fake


def online_env(hub: FakeHub, hf_home: Path, **extra: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(hf_home),
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
        **extra,
    }


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture(scope="module")
def online(hub: FakeHub, hf_home: Path) -> Iterator[Server]:
    """A server that downloads from the fake hub into its own, initially empty, cache."""
    with running_server(online_env(hub, hf_home)) as server:
        yield server


def transcribe(server: Server, model: str) -> str:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300)
    with JFK.open("rb") as audio:
        return client.audio.transcriptions.create(file=audio, model=model).text


def listed(server: Server) -> set[str]:
    return {model["id"] for model in httpx.get(f"{server.url}/v1/models").json()["data"]}


def test_pull_downloads_once_then_serves_transcriptions(online: Server, hub: FakeHub) -> None:
    assert PULLED not in listed(online)
    first = httpx.post(f"{online.url}/v1/models/{PULLED}", timeout=120)
    assert first.status_code == 201, first.text
    assert first.json() | {"created": 0} == {
        "id": PULLED,
        "object": "model",
        "created": 0,
        "owned_by": "speaches-test",
        "kind": "stt",
        "source": "download",
        "downloaded": True,
    }
    assert hub.downloads_of(f"{PULLED}/resolve/{hub.repos[PULLED].sha}/model.bin") == 1
    # Only the model's files: not the README or .gitattributes.
    assert hub.downloads_of("README.md") == 0

    again = httpx.post(f"{online.url}/v1/models/{PULLED}", timeout=120)
    assert again.status_code == 200, again.text
    assert again.json()["source"] == "cache"
    assert hub.downloads_of(f"{PULLED}/resolve/{hub.repos[PULLED].sha}/model.bin") == 1

    assert PULLED in listed(online)
    assert word_error_rate(JFK_TEXT, transcribe(online, PULLED)) <= 0.05


def test_pull_of_an_unknown_repository_is_404(online: Server) -> None:
    response = httpx.post(f"{online.url}/v1/models/speaches-test/no-such-model", timeout=60)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "speaches-test/no-such-model" in error["message"]
    assert "no such repository" in error["message"]


def test_pull_of_a_bundled_model_downloads_nothing(online: Server, hub: FakeHub) -> None:
    response = httpx.post(f"{online.url}/v1/models/{BUNDLED_VOICE}", timeout=60)
    assert response.status_code == 200
    assert response.json()["source"] == "bundled"
    assert hub.downloads_of(f"{BUNDLED_VOICE}.onnx") == 0


def test_transcription_naming_a_model_not_here_downloads_it(online: Server, hub: FakeHub) -> None:
    assert IMPLICIT not in listed(online)
    assert word_error_rate(JFK_TEXT, transcribe(online, IMPLICIT)) <= 0.05
    assert hub.downloads_of(f"{IMPLICIT}/resolve/{hub.repos[IMPLICIT].sha}/model.bin") == 1
    assert IMPLICIT in listed(online)


def test_piper_voice_pull_then_speech_with_it(online: Server, hub: FakeHub) -> None:
    assert HUB_VOICE not in listed(online)
    first = httpx.post(f"{online.url}/v1/models/{HUB_VOICE}", timeout=120)
    assert first.status_code == 201, first.text
    assert (first.json()["kind"], first.json()["source"]) == ("tts", "download")
    assert hub.downloads_of(f"en/en_GB/hubjoe/medium/{HUB_VOICE}.onnx") == 1
    assert hub.downloads_of(f"en/en_GB/hubjoe/medium/{HUB_VOICE}.onnx.json") == 1
    assert httpx.post(f"{online.url}/v1/models/{HUB_VOICE}", timeout=60).status_code == 200
    assert HUB_VOICE in listed(online)

    speech = httpx.post(
        f"{online.url}/v1/audio/speech",
        json={"model": "tts-1", "voice": HUB_VOICE, "input": "Hello from the hub.", "response_format": "pcm"},
        timeout=120,
    )
    assert speech.status_code == 200, speech.text
    assert len(speech.content) / 2 / 24000 > 0.5  # 16-bit pcm at 24 kHz: over half a second of speech


def test_delete_removes_from_the_cache_but_not_while_loaded(online: Server, hf_home: Path) -> None:
    assert httpx.post(f"{online.url}/v1/models/{DELETED}", timeout=120).status_code == 201
    cache_folder = hf_home / "hub" / "models--speaches-test--whisper-to-delete"
    assert cache_folder.is_dir()
    assert httpx.post(f"{online.url}/api/ps/{DELETED}", timeout=120).status_code == 201

    refused = httpx.delete(f"{online.url}/v1/models/{DELETED}")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "model_loaded"
    assert cache_folder.is_dir()

    assert httpx.delete(f"{online.url}/api/ps/{DELETED}").status_code == 200
    deleted = httpx.delete(f"{online.url}/v1/models/{DELETED}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True
    assert deleted.json()["freed_bytes"] > 70_000_000
    assert not cache_folder.exists()
    assert DELETED not in listed(online)
    assert httpx.get(f"{online.url}/v1/models/{DELETED}").status_code == 404
    assert httpx.delete(f"{online.url}/v1/models/{DELETED}").status_code == 404


def test_delete_of_a_voice_removes_only_its_files(online: Server, hf_home: Path, hub: FakeHub) -> None:
    from huggingface_hub import hf_hub_download

    assert httpx.post(f"{online.url}/v1/models/{HUB_VOICE}", timeout=120).status_code in (200, 201)
    # The voice index, as another program (or huggingface-cli) would put it in the shared cache.
    hf_hub_download("rhasspy/piper-voices", "voices.json", cache_dir=hf_home / "hub", endpoint=hub.url)
    voices_repo = hf_home / "hub" / "models--rhasspy--piper-voices"
    assert list(voices_repo.glob(f"snapshots/*/en/en_GB/hubjoe/medium/{HUB_VOICE}.onnx"))
    assert list(voices_repo.glob("snapshots/*/voices.json"))
    assert httpx.delete(f"{online.url}/api/ps/{HUB_VOICE}").status_code in (200, 404)  # loaded by an earlier test

    assert httpx.delete(f"{online.url}/v1/models/{HUB_VOICE}").status_code == 200
    assert not list(voices_repo.glob(f"snapshots/*/**/{HUB_VOICE}.onnx*"))
    assert list(voices_repo.glob("snapshots/*/voices.json")), "the voice index shares the repo and stays"
    assert HUB_VOICE not in listed(online)
    # The bundled voice is not the cache's to delete.
    bundled = httpx.delete(f"{online.url}/v1/models/{BUNDLED_VOICE}")
    assert bundled.status_code == 409
    assert bundled.json()["error"]["code"] == "model_not_deletable"


def test_registry_lists_the_hub_and_the_bundled_models(online: Server, hub: FakeHub) -> None:
    response = httpx.get(f"{online.url}/v1/registry", timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hub_errors"] == []
    models = {(model["kind"], model["id"]): model for model in body["data"]}
    for repo_id in (PULLED, IMPLICIT, DELETED, PRELOADED):
        assert models[("stt", repo_id)]["on_hub"] is True
        assert models[("stt", repo_id)]["language"] == ["en"]
    assert models[("stt", "Systran/faster-whisper-base")]["bundled"] is True
    assert models[("stt", "Systran/faster-whisper-tiny.en")]["available"] is True
    joe = models[("tts", BUNDLED_VOICE)]
    assert (joe["on_hub"], joe["bundled"], joe["available"]) == (True, True, True)
    hub_voice = models[("tts", HUB_VOICE)]
    assert (hub_voice["on_hub"], hub_voice["bundled"], hub_voice["language"]) == (True, False, ["en_GB"])
    assert hub_voice["size_bytes"] > 60_000_000
    assert hub_voice["quality"] == "medium"
    assert any(method == "GET" and path == "/api/models" for method, path in hub.requests)

    voices_only = httpx.get(f"{online.url}/v1/registry", params={"kind": "tts"}, timeout=60).json()["data"]
    assert voices_only
    assert {model["kind"] for model in voices_only} == {"tts"}


def test_offline_server_refuses_downloads_clearly_and_lists_what_it_has(hub: FakeHub, tmp_path: Path) -> None:
    requests_before = len(hub.requests)
    with running_server(online_env(hub, tmp_path, HF_HUB_OFFLINE="1")) as offline:
        pull = httpx.post(f"{offline.url}/v1/models/{PULLED}", timeout=60)
        assert pull.status_code == 409
        error = pull.json()["error"]
        assert error["code"] == "hub_offline"
        assert PULLED in error["message"]
        assert "HF_HUB_OFFLINE" in error["message"]
        # Bundled models need no download, offline or not.
        assert httpx.post(f"{offline.url}/v1/models/Systran/faster-whisper-tiny.en").status_code == 200

        registry = httpx.get(f"{offline.url}/v1/registry", timeout=60).json()
        ids = {model["id"] for model in registry["data"]}
        assert {"Systran/faster-whisper-base", "Systran/faster-whisper-tiny.en", BUNDLED_VOICE} <= ids
        assert PULLED not in ids
        assert any("HF_HUB_OFFLINE" in message for message in registry["hub_errors"])
    assert len(hub.requests) == requests_before, hub.requests[requests_before:]


def test_unreachable_hub_gives_a_clear_error(tmp_path: Path) -> None:
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    env = {"HF_ENDPOINT": nothing_listens, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path)}
    with running_server(env) as server:
        started = time.monotonic()
        response = httpx.post(f"{server.url}/v1/models/{PULLED}", timeout=120)
        assert time.monotonic() - started < 30
        assert response.status_code == 404
        message = response.json()["error"]["message"]
        assert PULLED in message
        assert "downloading it from the Hugging Face Hub failed" in message
        assert server.alive()


def test_preloaded_download_holds_readiness_until_loaded(hub: FakeHub, tmp_path: Path) -> None:
    gate = hub.hold("model.bin")
    try:
        # A generous download timeout: the held download must not time out on a slow machine.
        env = online_env(hub, tmp_path, PRELOAD_MODELS=f"{PRELOADED},{BUNDLED_VOICE}", HF_HUB_DOWNLOAD_TIMEOUT="60")
        with running_server(env) as server:
            # Up and answering while the preload waits for its download.
            assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
            not_ready = httpx.get(f"{server.url}/health/ready")
            assert not_ready.status_code == 503
            assert not_ready.json() == {"status": "loading"}
            assert {(model["id"], model["state"]) for model in httpx.get(f"{server.url}/api/ps").json()["models"]} == {
                (PRELOADED, "loading")
            }
            gate.set()
            deadline = time.monotonic() + 60
            while (ready := httpx.get(f"{server.url}/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, server.logs()
                time.sleep(0.1)
            assert ready.json() == {"status": "ready", "preload_errors": []}
            loaded = {(model["id"], model["state"]) for model in httpx.get(f"{server.url}/api/ps").json()["models"]}
            assert loaded == {(PRELOADED, "loaded"), (BUNDLED_VOICE, "loaded")}
    finally:
        gate.set()
