"""CORS: preflights answered without a key, headers on every answer to an allowed origin, none for other
origins or by default."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import Server
from tests.server.http_checks import ORIGIN

pytestmark = pytest.mark.server


def test_cors_preflight_is_answered_without_a_key(locked_server: Server) -> None:
    preflight = httpx.options(
        f"{locked_server.url}/v1/audio/transcriptions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


def test_cors_headers_on_answers_even_401(locked_server: Server) -> None:
    refused = httpx.get(f"{locked_server.url}/v1/models", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()


def test_cors_refuses_other_origins(locked_server: Server) -> None:
    preflight = httpx.options(
        f"{locked_server.url}/v1/models",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    plain = httpx.get(f"{locked_server.url}/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_no_cors_by_default(server: Server) -> None:
    response = httpx.get(f"{server.url}/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers
