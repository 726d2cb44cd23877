"""Issue 11.7: JSON bodies (parsed on the event loop) get their own small limit, MAX_JSON_BODY_BYTES; uploads
keep MAX_UPLOAD_BYTES; and all bodies held at once (uploads spooled while they wait for inference) are
bounded by MAX_PENDING_UPLOAD_BYTES, past which a request gets 429."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.hardening.observe import wait_for
from tests.helpers import Server, running_server

pytestmark = pytest.mark.server

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def limited_server() -> Iterator[Server]:
    with running_server({"MAX_PENDING_UPLOAD_BYTES": str(3 * MIB)}) as server:
        yield server


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_json_bodies_are_limited_to_one_mebibyte(limited_server: Server) -> None:
    url = f"{limited_server.url}/v1/audio/speech"
    big = json.dumps({"model": "tts-1", "voice": "alloy", "input": "a" * (2 * MIB)}).encode()
    for body in (big, iter([big[:MIB], big[MIB:]])):  # declared length, then chunked
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=60)
        error = error_of(response, 413)
        assert error["code"] == "request_too_large"
        assert "MAX_JSON_BODY_BYTES" in error["message"]
    # Any body that is not a multipart upload counts as such, whatever it claims to be.
    error_of(httpx.post(url, content=big, headers={"Content-Type": "text/plain"}, timeout=60), 413)
    small = {"model": "tts-1", "voice": "alloy", "input": "Small is fine."}
    assert httpx.post(url, json=small, timeout=120).is_success


def test_uploads_keep_the_upload_limit(limited_server: Server) -> None:
    noise = os.urandom(int(1.5 * MIB))
    response = httpx.post(
        f"{limited_server.url}/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("noise.wav", noise, "audio/wav")},
        timeout=60,
    )
    assert error_of(response, 400)["param"] == "file"  # read whole and found not to be audio: not 413


def held_upload(server: Server, size: int) -> socket.socket:
    """An upload that declares `size` bytes and sends only its start: the server holds room for all of it."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n" + f"Content-Length: {size}\r\n\r\n".encode() + b"--b\r\n"
    )
    return sock


def test_uploads_held_at_once_are_bounded(limited_server: Server) -> None:
    server = limited_server
    size = int(1.4 * MIB)
    held = [held_upload(server, size), held_upload(server, size)]
    try:
        refused = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("more.wav", os.urandom(size - 1000), "audio/wav")},
            timeout=60,
        )
        error = error_of(refused, 429)
        assert error["code"] == "too_many_pending_uploads"
        assert "MAX_PENDING_UPLOAD_BYTES" in error["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    finally:
        for sock in held:
            sock.close()

    def accepted_again() -> bool:
        response = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("more.wav", os.urandom(size - 1000), "audio/wav")},
            timeout=60,
        )
        return response.status_code == 400  # past the bound again: read, and found not to be audio

    wait_for(accepted_again, 30, "the held room to come back")
