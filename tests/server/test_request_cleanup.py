"""A request's work and files end with it: a departed client stops its transcription, synthesis or live
session, and spooled uploads are closed and removed whether the request was answered, refused or dropped.

The server here decodes sequentially (WHISPER__USE_BATCHED_MODE=false), where one inference step is one segment;
in batched mode a step is a whole batch, and a departed client's work stops only after it.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, Server, normalize, running_server
from tests.server.probes import (
    SAMPLE_RATE,
    cpu_seconds,
    english_licence_reading,
    fds_under,
    files_in,
    metric,
    wait_for,
    wav_bytes,
)

pytestmark = pytest.mark.server

VOICE = "en_US-joe-medium"


@pytest.fixture(scope="module")
def long_speech_wav() -> bytes:
    """About four minutes of speech (minutes of CPU work for any model on this machine)."""
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    return wav_bytes(np.tile(np.concatenate([english_licence_reading(), jfk]), 6))


def multipart(fields: dict[str, str], file_bytes: bytes, filename: str = "speech.wav") -> tuple[bytes, str]:
    boundary = "speaches-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + file_bytes
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def http_request_head(method: str, path: str, content_type: str, length: int, request_id: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nX-Request-Id: {request_id}\r\n\r\n"
    ).encode()


def abort(sock: socket.socket) -> None:
    """Drop the connection the way a crashed client does: a reset, no orderly close."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def fault_server(spool_dir: Path) -> Iterator[Server]:
    env = {
        "WHISPER__USE_BATCHED_MODE": "false",
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
        "PRELOAD_MODELS": f"{TINY_EN},{VOICE}",
        "TMPDIR": str(spool_dir),  # where python-multipart spools uploads over 1 MB
    }
    with running_server(env) as server:
        wait_for(lambda: httpx.get(f"{server.url}/health/ready").status_code == 200, 120, "preloaded models")
        yield server


def assert_work_stops(
    server: Server, drop: Callable[[], None], *, running_for: float = 1.0, settle: float = 3.0
) -> None:
    """The job is running; after `drop()` the pool is idle within `settle` seconds and stays so.

    `settle` is one inference step (a segment, a sentence) on this shared 2-core machine, with margin.
    """
    pid = server.process.pid  # type: ignore[union-attr]
    wait_for(lambda: metric(server, "speaches_inference_running") >= 1, 60, "the job to start")
    before = cpu_seconds(pid)
    time.sleep(running_for)
    assert cpu_seconds(pid) - before > 0.3, "the job was not using the CPU: nothing to stop"
    drop()
    took = wait_for(lambda: metric(server, "speaches_inference_running") == 0, settle, "the pool to go idle")
    quiet_from = cpu_seconds(pid)
    time.sleep(2.0)
    burned = cpu_seconds(pid) - quiet_from
    assert burned < 0.3, f"the server burned {burned:.2f} s of CPU in the 2 s after the work stopped"
    print(f"work stopped {took:.2f} s after the client left")


def test_client_gone_mid_upload_leaves_no_job_and_no_temp_file(
    fault_server: Server, spool_dir: Path, long_speech_wav: bytes
) -> None:
    pid = fault_server.process.pid  # type: ignore[union-attr]
    already_there = files_in(spool_dir)
    body, content_type = multipart({"model": TINY_EN}, long_speech_wav)
    sock = socket.create_connection(("127.0.0.1", fault_server.port))
    sock.sendall(http_request_head("POST", "/v1/audio/transcriptions", content_type, len(body), "aborted-upload"))
    sock.sendall(body[: len(body) // 2])
    # The upload is spooled to disk (over 1 MB) while it arrives: the check below is not vacuous.
    wait_for(lambda: bool(fds_under(pid, spool_dir)), 10, "the upload to spool to disk")
    abort(sock)
    wait_for(lambda: not fds_under(pid, spool_dir), 2, "the spooled upload to be closed")
    assert files_in(spool_dir) == already_there
    time.sleep(0.5)
    assert metric(fault_server, "speaches_inference_running") == 0
    assert not [line for line in fault_server.logs().splitlines() if "[aborted-upload]" in line and "whisper" in line]


def test_client_gone_mid_transcription_stops_it(fault_server: Server, long_speech_wav: bytes) -> None:
    body, content_type = multipart({"model": TINY_EN}, long_speech_wav)
    sock = socket.create_connection(("127.0.0.1", fault_server.port))
    sock.sendall(http_request_head("POST", "/v1/audio/transcriptions", content_type, len(body), "gone-json") + body)
    # Past the first step, which decodes the whole window and computes its features (seconds here).
    assert_work_stops(fault_server, lambda: abort(sock), running_for=4.0)


def test_client_gone_mid_sse_stops_the_transcription(fault_server: Server, long_speech_wav: bytes) -> None:
    body, content_type = multipart({"model": TINY_EN, "stream": "true"}, long_speech_wav)
    sock = socket.create_connection(("127.0.0.1", fault_server.port))
    sock.sendall(http_request_head("POST", "/v1/audio/transcriptions", content_type, len(body), "gone-sse") + body)
    sock.settimeout(60)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "no event stream started"
    assert_work_stops(fault_server, lambda: abort(sock))


def test_client_gone_mid_speech_stream_stops_synthesis(fault_server: Server) -> None:
    sentence = "The quick brown fox jumps over the lazy dog while the band plays on. "
    payload = json.dumps({"model": "tts-1", "voice": VOICE, "input": sentence * 55, "response_format": "pcm"})
    body = payload.encode()
    sock = socket.create_connection(("127.0.0.1", fault_server.port))
    sock.sendall(http_request_head("POST", "/v1/audio/speech", "application/json", len(body), "gone-speech") + body)
    sock.settimeout(60)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "no audio stream started"
    assert_work_stops(fault_server, lambda: abort(sock))


def test_client_gone_mid_websocket_stops_the_session(fault_server: Server, long_speech_wav: bytes) -> None:
    url = fault_server.url.replace("http://", "ws://") + f"/v1/audio/transcriptions?model={TINY_EN}"
    pcm = long_speech_wav[44:]
    stop_sending = threading.Event()
    with connect(url, open_timeout=30) as websocket:

        def stream_audio() -> None:
            # Four times real time: the session always has new audio to transcribe.
            frame = SAMPLE_RATE * 2 // 10
            for start in range(0, len(pcm), frame):
                if stop_sending.is_set():
                    return
                try:
                    websocket.send(pcm[start : start + frame])
                except Exception:
                    return
                time.sleep(0.025)

        sender = threading.Thread(target=stream_audio, daemon=True)
        sender.start()

        def drop() -> None:
            stop_sending.set()
            abort(websocket.socket)

        try:
            assert_work_stops(fault_server, drop)
        finally:
            stop_sending.set()
            sender.join(5)


@pytest.mark.parametrize(
    ("file_bytes", "expected_status"),
    [
        (b"\x00\x01not audio at all" * 200_000, 400),  # 3.4 MB of garbage: spooled, then refused
        (None, 200),  # a real 3 MB wav, transcribed
    ],
    ids=["refused", "transcribed"],
)
def test_spooled_uploads_are_removed_after_the_request(
    fault_server: Server, spool_dir: Path, file_bytes: bytes | None, expected_status: int
) -> None:
    pid = fault_server.process.pid  # type: ignore[union-attr]
    already_there = files_in(spool_dir)
    if file_bytes is None:
        jfk = decode_audio(AUDIO_DIR / "jfk.flac")
        file_bytes = wav_bytes(np.concatenate([jfk, np.zeros(SAMPLE_RATE * 80, dtype=np.float32)]))
    assert len(file_bytes) > 2 * 1024 * 1024
    response = httpx.post(
        f"{fault_server.url}/v1/audio/transcriptions",
        files={"file": ("upload.wav", file_bytes)},
        data={"model": TINY_EN},
        timeout=120,
    )
    assert response.status_code == expected_status, response.text
    if expected_status == 200:
        assert normalize(JFK_TEXT) in normalize(response.json()["text"])
    else:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    wait_for(lambda: not fds_under(pid, spool_dir), 2, "the spooled upload to be closed")
    assert files_in(spool_dir) == already_there
