"""What the hardening tests observe from outside: raw requests, gauges on /metrics, leases on /api/ps."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable

import httpx

from tests.helpers import Server

VOICE = "en_US-joe-medium"
# Enough speech that its pcm at 48 kHz outgrows every buffer between the server and a client that
# does not read (the server's socket buffer grows to 4 MiB here): about a minute of audio per request.
LONG_TEXT = " ".join(
    f"Sentence number {index} keeps talking, so that the answer is far larger than any buffer on the way."
    for index in range(24)
)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition()` holds; the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def metric(server: Server, name: str, **labels: str) -> float:
    """One sample of /metrics (the first whose labels include `labels`); 0 when absent."""
    for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if re.match(rf"{name}[{{ ]", line) and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def leases(server: Server, model_id: str) -> int:
    """How many users hold `model_id` (its ref_count on /api/ps); -1 when it is not loaded."""
    for model in httpx.get(f"{server.url}/api/ps", timeout=30).json()["models"]:
        if model["id"] == model_id and model["state"] == "loaded":
            return int(model["ref_count"])
    return -1


def send_raw(
    server: Server, path: str, body: bytes, content_type: str = "application/json", *, receive_buffer: int = 4096
) -> socket.socket:
    """POST `body` on a raw socket with a small receive buffer, and read nothing: a client that stalls."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", server.port))
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def stalled_speech(server: Server, *, sse: bool = False) -> socket.socket:
    request = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "pcm", "sample_rate": 48000}
    if sse:
        request["stream_format"] = "sse"
    return send_raw(server, "/v1/audio/speech", json.dumps(request).encode())


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[int, bool]:
    """Drain the socket: (bytes read, whether the server closed or reset it within `timeout` s of silence)."""
    sock.settimeout(timeout)
    total = 0
    try:
        while chunk := sock.recv(1 << 16):
            total += len(chunk)
    except ConnectionResetError:
        return total, True
    except TimeoutError:
        return total, False
    return total, True
