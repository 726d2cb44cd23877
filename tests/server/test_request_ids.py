"""X-Request-Id: generated or echoed (when sane) on every answer, WebSocket handshakes included, and in the log line."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import Server

pytestmark = pytest.mark.server


def test_request_id_is_generated_echoed_and_logged(server: Server) -> None:
    fresh = httpx.get(f"{server.url}/health")
    generated = fresh.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert httpx.get(f"{server.url}/health").headers["x-request-id"] != generated

    echoed = httpx.get(f"{server.url}/no/such/route", headers={"X-Request-Id": "trace-4711.a:b"})
    assert echoed.status_code == 404
    assert echoed.headers["x-request-id"] == "trace-4711.a:b"

    for insane in ("has space", "x" * 200, "new\\nline", "-leading-dash", "ünïcode"):
        replaced = httpx.get(f"{server.url}/health", headers={"X-Request-Id": insane.encode()})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"]), insane

    deadline = time.monotonic() + 5
    while "[trace-4711.a:b]" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(line for line in server.logs().splitlines() if "[trace-4711.a:b]" in line)
    assert "/no/such/route" in line
    assert "404" in line


def test_websocket_handshake_carries_a_request_id(locked_server: Server) -> None:
    ws_url = locked_server.url.replace("http://", "ws://") + "/v1/audio/transcriptions"
    with pytest.raises(InvalidStatus) as refused, connect(ws_url, additional_headers={"X-Request-Id": "ws-1"}):
        pass
    assert refused.value.response.headers["x-request-id"] == "ws-1"
