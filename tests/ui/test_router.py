"""The page and its files as HTTP serves them (in-process, no browser): open without the key, off with ENABLE_UI."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from speaches.config import Settings
from speaches.main import create_app
from speaches.ui.router import STATIC_DIR


def _client(**settings: object) -> TestClient:
    return TestClient(create_app(Settings(_env_file=None, **settings)))


def test_page_and_files_load_without_the_key_while_the_api_still_needs_it() -> None:
    with _client(api_key="secret") as client:
        _check_open_page(client)


def _check_open_page(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # Every file the page names is served, as the type a browser needs (modules must be JavaScript).
    referenced = re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text)
    assert "/ui/app.js" in referenced
    for path in [*referenced, *(f"/ui/{file.name}" for file in STATIC_DIR.glob("*.js"))]:
        response = client.get(path)
        assert response.status_code == 200, path
        expected = "text/javascript" if path.endswith(".js") else "text/css"
        assert response.headers["content-type"].startswith(expected), path
    refused = client.get("/v1/audio/voices")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/audio/voices", headers={"Authorization": "Bearer secret"}).status_code == 200


REQUIRED_TEST_IDS = (
    "api-key",
    "transcribe-file",
    "transcribe-submit",
    "transcript",
    "speech-input",
    "speech-submit",
    "speech-audio",
    "live-start",
    "live-stop",
    "live-transcript",
    "models-list",
)


def test_the_page_carries_every_fixed_test_id_once() -> None:
    page = _client().get("/").text
    for test_id in REQUIRED_TEST_IDS:
        assert page.count(f'data-testid="{test_id}"') == 1, test_id


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/..%2Fconfig.py", "/ui/router.py", "/ui/index.html", "/ui/"])
def test_only_the_playground_files_are_served(path: str) -> None:
    response = _client().get(path)
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_enable_ui_false_serves_no_page() -> None:
    client = _client(enable_ui=False)
    assert client.get("/").status_code == 404
    assert client.get("/ui/app.js").status_code == 404
    assert client.get("/health").status_code == 200


def test_the_page_is_not_part_of_the_api_schema() -> None:
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]
    assert "/" not in paths
    assert not any(path.startswith("/ui") for path in paths)
