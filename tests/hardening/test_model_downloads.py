"""Issue 11.3 (downloads): an optional allow-list, a size cap checked before any byte is fetched, a bound on
loads and downloads at once, and DELETE /v1/models that removes only speech models from a shared cache.
Against the local stand-in Hub (tests/fake_hub.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI, PermissionDeniedError

from tests.fake_hub import FakeHub
from tests.hardening.observe import wait_for
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, running_server, word_error_rate

pytestmark = pytest.mark.server

ALLOWED = "speaches-test/ok-whisper"
ALSO_ALLOWED = "speaches-test/ok-second"
FORBIDDEN = "speaches-test/not-allowed"
HUB_VOICE = "en_GB-hubjoe-medium"
PLAIN_REPO = "someorg/some-llm"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        for repo_id in (ALLOWED, ALSO_ALLOWED, FORBIDDEN):
            fake.add_whisper_repo(repo_id)
        fake.add_piper_voice(HUB_VOICE)
        fake.add_repo(PLAIN_REPO, {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\0" * 4096})
        yield fake


def online(hub: FakeHub, hf_home: Path, **extra: str) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_home), **extra}


def test_allow_list_and_bounded_concurrent_downloads(hub: FakeHub, tmp_path: Path) -> None:
    env = online(
        hub,
        tmp_path,
        DOWNLOADABLE_MODELS="speaches-test/ok-*,en_GB-*",
        MAX_CONCURRENT_MODEL_LOADS="1",
        MAX_QUEUED_REQUESTS="0",
        PRELOAD_MODELS=TINY_EN,
        HF_HUB_DOWNLOAD_TIMEOUT="60",
    )
    with running_server(env) as server:
        wait_for(lambda: httpx.get(f"{server.url}/health/ready", timeout=30).status_code == 200, 120, "the preload")
        requests_before = len(hub.requests)
        refused = httpx.post(f"{server.url}/v1/models/{FORBIDDEN}", timeout=60)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["type"]) == ("model_not_downloadable", "permission_error")
        assert "DOWNLOADABLE_MODELS" in error["message"]
        client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
        with pytest.raises(PermissionDeniedError), (AUDIO_DIR / "jfk.flac").open("rb") as audio:
            client.audio.transcriptions.create(file=audio, model=FORBIDDEN)
        assert not any(FORBIDDEN in path for _method, path in hub.requests[requests_before:])

        gate = hub.hold("model.bin")
        outcome: dict[str, int] = {}

        def pull_first() -> None:
            outcome["status"] = httpx.post(f"{server.url}/v1/models/{ALLOWED}", timeout=120).status_code

        first = threading.Thread(target=pull_first)
        try:
            first.start()
            wait_for(lambda: hub.downloads_of("model.bin") > 0, 60, "the download to start")
            # The one download slot is taken and nobody may wait: the next one is told to come back.
            busy = httpx.post(f"{server.url}/v1/models/{ALSO_ALLOWED}", timeout=60)
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "model_io_busy"
            assert int(busy.headers["retry-after"]) >= 1
            # Inference has its own pool: a loaded model transcribes while the Hub stalls.
            with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
                text = client.audio.transcriptions.create(file=audio, model=TINY_EN).text
            assert word_error_rate(JFK_TEXT, text) < 0.15
        finally:
            gate.set()
            first.join(timeout=120)
        assert outcome["status"] == 201
        assert httpx.post(f"{server.url}/v1/models/{ALSO_ALLOWED}", timeout=120).status_code == 201
        assert httpx.post(f"{server.url}/v1/models/{HUB_VOICE}", timeout=120).status_code == 201


def test_downloads_larger_than_the_cap_are_refused_before_fetching(hub: FakeHub, tmp_path: Path) -> None:
    with running_server(online(hub, tmp_path, MAX_DOWNLOAD_BYTES=str(1024 * 1024))) as server:
        fetched_before = hub.downloads_of("model.bin"), hub.downloads_of(f"{HUB_VOICE}.onnx")
        for model_id in (ALLOWED, HUB_VOICE):
            refused = httpx.post(f"{server.url}/v1/models/{model_id}", timeout=60)
            assert refused.status_code == 413, refused.text
            error = refused.json()["error"]
            assert error["code"] == "model_too_large"
            assert "MAX_DOWNLOAD_BYTES" in error["message"]
        assert (hub.downloads_of("model.bin"), hub.downloads_of(f"{HUB_VOICE}.onnx")) == fetched_before


def test_delete_removes_only_speech_models_from_a_shared_cache(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    # Another program's model in the same cache.
    for filename in ("config.json", "model.safetensors"):
        hf_hub_download(PLAIN_REPO, filename, cache_dir=tmp_path / "hub", endpoint=hub.url)
    plain_files = sorted((tmp_path / "hub").glob("models--someorg--some-llm/**/*"))
    assert plain_files
    with running_server(online(hub, tmp_path)) as server:
        refused = httpx.delete(f"{server.url}/v1/models/{PLAIN_REPO}", timeout=60)
        assert refused.status_code == 404, refused.text
        assert "only" in refused.json()["error"]["message"]
        assert sorted((tmp_path / "hub").glob("models--someorg--some-llm/**/*")) == plain_files
        # A speech model is still deleted as before.
        assert httpx.post(f"{server.url}/v1/models/{ALLOWED}", timeout=120).status_code == 201
        deleted = httpx.delete(f"{server.url}/v1/models/{ALLOWED}", timeout=60)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["freed_bytes"] > 1_000_000
