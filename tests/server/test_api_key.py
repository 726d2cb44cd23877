"""API_KEY over HTTP and WebSocket: which routes need it, how it is sent, and that a refusal comes before the body."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import Server
from tests.server.http_checks import API_KEY, assert_error_shape, bearer

pytestmark = pytest.mark.server


@pytest.mark.parametrize("path", ["/health", "/health/ready", "/docs", "/redoc", "/openapi.json"])
def test_health_and_docs_stay_open(locked_server: Server, path: str) -> None:
    assert httpx.get(f"{locked_server.url}{path}").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics"),
        ("GET", "/v1/models"),
        ("GET", "/api/ps"),
        ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v1/audio/translations"),
        ("POST", "/v1/audio/speech"),
        ("GET", "/v1/audio/voices"),
        ("DELETE", "/v1/models/Systran/faster-whisper-tiny.en"),
        ("GET", "/no/such/route"),
        ("GET", "/health/"),  # near-misses of the open paths are not open
        ("GET", "/docsx"),
    ],
)
def test_every_other_route_needs_the_key(locked_server: Server, method: str, path: str) -> None:
    url = f"{locked_server.url}{path}"
    missing = assert_error_shape(httpx.request(method, url), 401)
    assert missing["code"] == "invalid_api_key"
    assert missing["type"] == "invalid_request_error"
    assert "Authorization" in str(missing["message"])
    wrong = httpx.request(method, url, headers=bearer(API_KEY + "x"))
    assert assert_error_shape(wrong, 401)["code"] == "invalid_api_key"
    assert wrong.headers["www-authenticate"] == "Bearer"
    for malformed in (API_KEY, f"Basic {API_KEY}", "Bearer", f"Bearer  {API_KEY[:-1]}"):
        assert httpx.request(method, url, headers={"Authorization": malformed}).status_code == 401
    # The query parameter is for WebSockets only.
    assert httpx.request(method, url, params={"api_key": API_KEY}).status_code == 401


def test_the_right_key_is_let_through(locked_server: Server) -> None:
    metrics = httpx.get(f"{locked_server.url}/metrics", headers=bearer(API_KEY))
    assert metrics.status_code == 200
    assert "speaches_http_requests_total" in metrics.text
    # The scheme is case-insensitive (RFC 7235), as clients differ.
    assert httpx.get(f"{locked_server.url}/metrics", headers={"Authorization": f"bearer {API_KEY}"}).status_code == 200
    # Past the key check the route decides: an unknown route is still a 404.
    assert_error_shape(httpx.get(f"{locked_server.url}/no/such/route", headers=bearer(API_KEY)), 404)


def test_openai_sdk_sends_the_key(locked_server: Server) -> None:
    from openai import AuthenticationError, OpenAI

    good = OpenAI(base_url=f"{locked_server.url}/v1", api_key=API_KEY, max_retries=0)
    bad = OpenAI(base_url=f"{locked_server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(AuthenticationError) as refused:
        bad.models.list()
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    assert good.models.list().data


def test_refused_before_the_body_is_read(locked_server: Server) -> None:
    """A 401 arrives while the client has sent only headers announcing 50 MB: no body was awaited."""
    with socket.create_connection(("127.0.0.1", locked_server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 52428800\r\n\r\n"
        )
        started = time.monotonic()
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 401"), head
        assert time.monotonic() - started < 2


def test_websocket_handshake_needs_the_key(locked_server: Server) -> None:
    ws_url = locked_server.url.replace("http://", "ws://") + "/v1/audio/transcriptions"
    for extra in ({}, {"additional_headers": bearer("wrong")}):
        with pytest.raises(InvalidStatus) as refused, connect(ws_url, **extra):  # type: ignore[arg-type]
            pass
        assert refused.value.response.status_code == 401
        assert b'"invalid_api_key"' in refused.value.response.body
    with pytest.raises(InvalidStatus) as refused, connect(f"{ws_url}?api_key=wrong"):
        pass
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize("how", ["header", "query"])
def test_websocket_with_the_key_gets_past_the_check(locked_server: Server, how: str) -> None:
    ws_url = locked_server.url.replace("http://", "ws://") + "/v1/audio/transcriptions"
    if how == "header":
        opened = connect(ws_url, additional_headers=bearer(API_KEY), open_timeout=10)
    else:
        opened = connect(f"{ws_url}?api_key={httpx.QueryParams({'k': API_KEY})['k']}", open_timeout=10)
    with opened as websocket:
        assert websocket.response is not None
        assert websocket.response.status_code == 101
        assert re.fullmatch(r"[0-9a-f]{32}", websocket.response.headers["x-request-id"])


def test_no_key_configured_means_open(server: Server) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 200
