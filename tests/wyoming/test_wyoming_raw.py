"""The Wyoming server's answers to raw, malformed streams, and its metrics and warnings."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from pathlib import Path

import httpx
import pytest
from wyoming.client import AsyncTcpClient, AsyncUnixClient
from wyoming.info import Describe, Info

from tests.helpers import Server, free_port

pytestmark = pytest.mark.server


def raw_exchange(port: int, data: bytes) -> list[dict[str, object]]:
    """Send raw bytes; the events (header and data merged) the server answers before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    events = []
    while received:
        line, _, received = received.partition(b"\n")
        event = json.loads(line)
        data_length = event.get("data_length") or 0
        event.setdefault("data", {}).update(json.loads(received[:data_length]) if data_length else {})
        received = received[data_length + (event.get("payload_length") or 0) :]
        events.append(event)
    return events


def test_malformed_streams_are_answered_then_closed(wyoming_server: Server) -> None:
    port = wyoming_server.wyoming_port  # type: ignore[attr-defined]
    for data in (
        b"this is not json\n",
        b'{"type": "audio-chunk", "payload_length": 99999999999}\n',
        b'{"type": "describe", "data_length": -1}\n',
        b"{" + b"x" * 100_000 + b"\n",
    ):
        answers = raw_exchange(port, data)
        assert [answer["type"] for answer in answers] == ["error"], (data[:40], answers)
    assert wyoming_server.alive()


def test_warns_when_listening_beyond_loopback_with_an_api_key() -> None:
    port = free_port()
    with Server({"WYOMING_URI": f"tcp://0.0.0.0:{port}", "API_KEY": "secret"}) as server:
        # The HTTP API wants the key; Wyoming has no authentication, as documented.
        assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 401

        async def describe() -> Info:
            async with AsyncTcpClient("127.0.0.1", port, read_timeout=30) as client:
                await client.write_event(Describe().event())
                event = await client.read_event()
                assert event is not None
                return Info.from_event(event)

        assert asyncio.run(describe()).tts
        assert "Wyoming protocol has no authentication" in server.logs()
    with Server({"WYOMING_URI": f"tcp://127.0.0.1:{free_port()}", "API_KEY": "secret"}) as quiet:
        assert "Wyoming protocol listening" in quiet.logs()
        assert "no authentication" not in quiet.logs()


def test_serves_on_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "wyoming.sock"
    socket_path.touch()  # a stale file of another kind is left alone: the server must refuse, not delete it
    server = Server({"WYOMING_URI": f"unix://{socket_path}"})
    with pytest.raises(RuntimeError, match="Cannot serve the Wyoming protocol on WYOMING_URI"):
        server.start()
    assert socket_path.is_file()
    socket_path.unlink()

    async def describe() -> Info:
        async with AsyncUnixClient(str(socket_path), read_timeout=30) as client:
            await client.write_event(Describe().event())
            event = await client.read_event()
            assert event is not None
            return Info.from_event(event)

    with Server({"WYOMING_URI": f"unix://{socket_path}"}):
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        assert asyncio.run(describe()).asr
    assert not socket_path.exists(), "the socket file was not removed at shutdown"
