"""Routing errors in OpenAI's error shape: an unknown route is a 404 pointing at /docs, a wrong method a 405
naming every allowed one."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import Server
from tests.server.http_checks import assert_error_shape

pytestmark = pytest.mark.server


def test_unknown_route_answers_in_openai_error_shape(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/nothing-here")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "/docs" in error["message"]


def test_405_lists_every_method_of_the_path(server: Server) -> None:
    # /v1/models/{model_id} is three routes (GET, POST, DELETE); Starlette alone would name only one.
    response = httpx.put(f"{server.url}/v1/models/Systran/faster-whisper-tiny.en")
    assert_error_shape(response, 405)
    assert response.headers["allow"] == "DELETE, GET, POST"
    assert httpx.put(f"{server.url}/health").headers["allow"] == "GET"
