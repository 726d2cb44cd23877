"""Issue 11.6: no API key reaches a log line, right or wrong, wherever a client puts it: uvicorn logs every
WebSocket handshake with its query string, and browsers can only pass the key there."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.hardening.observe import wait_for
from tests.helpers import running_server

pytestmark = pytest.mark.server

API_KEY = "sk-live-secret-0123456789"
WRONG_KEY = "sk-wrong-guess-9876543210"


def test_no_key_in_any_log_line() -> None:
    with running_server({"API_KEY": API_KEY, "LOG_LEVEL": "debug"}) as server:
        ws_url = server.url.replace("http://", "ws://") + "/v1/audio/transcriptions"
        with connect(f"{ws_url}?model=whisper-1&api_key={API_KEY}", open_timeout=30) as session:
            assert session.response is not None
            assert session.response.status_code == 101
        for query in (f"api_key={WRONG_KEY}", f"api%5Fkey={WRONG_KEY}&x=1", f"API_KEY={WRONG_KEY}"):
            with pytest.raises(InvalidStatus), connect(f"{ws_url}?{query}", open_timeout=30):
                pass
        assert httpx.get(f"{server.url}/v1/models", params={"api_key": WRONG_KEY}, timeout=60).status_code == 401
        authorized = {"Authorization": f"Bearer {API_KEY}"}
        assert httpx.get(f"{server.url}/v1/models", headers=authorized, timeout=60).is_success
        wait_for(lambda: server.logs().count("WebSocket /v1/audio/transcriptions") >= 4, 30, "handshake log lines")
        logs = server.logs()
        assert API_KEY not in logs
        assert WRONG_KEY not in logs
        assert "api_key=[redacted]" in logs
        assert "api%5Fkey=[redacted]" in logs
