"""A corpus of bad input for every endpoint: each case must get a 4xx in OpenAI's error shape, never a 5xx,
never a hang, and never take the server down.

Requests go out through `http.client`, which sends the path and body bytes exactly as written (no
normalising of `..`, no re-encoding), so the server sees what a hostile or broken client would send.
"""

from __future__ import annotations

import http.client
import io
import json
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, TINY_EN, Server

pytestmark = pytest.mark.server

BOUNDARY = "corpus-boundary"
TEN_MB = 10 * 1024 * 1024
PATH_LIKE_MODEL_IDS = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "Systran/../../../etc",
    "..",
    "C:\\Windows\\System32",
    "~root/.ssh",
    "a/b/c/d",
    "model\x00id",
]


def _wav(seconds: float) -> bytes:
    samples = decode_audio(AUDIO_DIR / "jfk.flac")[: int(seconds * 16000)]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((samples * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


WAV = _wav(2.0)
FLAC = (AUDIO_DIR / "jfk.flac").read_bytes()
MP3 = (AUDIO_DIR / "multilingual.mp3").read_bytes()
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)


@dataclass
class Part:
    name: str
    value: bytes
    filename: str | None = None
    content_type: str | None = None


def multipart(*parts: Part) -> tuple[bytes, dict[str, str]]:
    chunks = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        if part.content_type:
            head += f"Content-Type: {part.content_type}\r\n"
        chunks.append(head.encode() + b"\r\n" + part.value + b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def upload(audio: bytes, filename: str = "speech.wav", content_type: str = "audio/wav") -> Part:
    return Part("file", audio, filename, content_type)


def form(file_part: Part | None, /, **fields: str | bytes) -> tuple[bytes, dict[str, str]]:
    parts = [Part(name, value if isinstance(value, bytes) else value.encode()) for name, value in fields.items()]
    if file_part is not None:
        parts.append(file_part)
    return multipart(*parts)


def raw_json(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {"Content-Type": "application/json"}


def as_json(value: Any) -> tuple[bytes, dict[str, str]]:
    return json.dumps(value).encode(), {"Content-Type": "application/json"}


@dataclass
class Case:
    id: str
    method: str
    path: str
    body: tuple[bytes, dict[str, str]] = field(default_factory=lambda: (b"", {}))
    status: int | tuple[int, ...] = 400


def stt_cases(path: str) -> list[Case]:
    name = path.rsplit("/", 1)[1]
    ok = {"model": TINY_EN}
    cases = [
        # audio that is not audio, or not all there
        Case("empty-file", "POST", path, form(upload(b""), **ok)),
        Case("truncated-wav-header", "POST", path, form(upload(WAV[:30]), **ok)),
        Case("truncated-flac-header", "POST", path, form(upload(FLAC[:40], "a.flac", "audio/flac"), **ok)),
        Case("truncated-mp3", "POST", path, form(upload(MP3[:300], "a.mp3", "audio/mpeg"), **ok)),
        Case("wav-header-only", "POST", path, form(upload(WAV[:44]), **ok)),
        Case("png-named-wav", "POST", path, form(upload(PNG), **ok)),
        Case("text-named-mp3", "POST", path, form(upload(b"hello " * 1000, "a.mp3", "audio/mpeg"), **ok)),
        Case("json-named-flac", "POST", path, form(upload(b'{"a": 1}', "a.flac", "audio/flac"), **ok)),
        Case("zeros", "POST", path, form(upload(bytes(64_000)), **ok)),
        Case("random-bytes", "POST", path, form(upload(np.random.default_rng(7).bytes(100_000)), **ok)),
        # the form itself
        Case("no-body", "POST", path, (b"", {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})),
        Case("no-file", "POST", path, form(None, **ok)),
        Case("file-as-text-field", "POST", path, form(None, file=WAV[:1000], **ok)),
        Case(
            "broken-multipart", "POST", path, (b"--nope\r\n\r\n", {"Content-Type": "multipart/form-data; boundary=x"})
        ),
        Case("json-body", "POST", path, as_json({"model": TINY_EN, "file": "speech.wav"})),
        Case(
            "urlencoded-body",
            "POST",
            path,
            (b"model=whisper-1&file=x", {"Content-Type": "application/x-www-form-urlencoded"}),
        ),
        Case("no-content-type", "POST", path, (WAV, {})),
        # fields of the wrong type or value
        Case("temperature-word", "POST", path, form(upload(WAV), temperature="hot", **ok)),
        Case("temperature-negative", "POST", path, form(upload(WAV), temperature="-1", **ok)),
        Case("temperature-huge", "POST", path, form(upload(WAV), temperature="1e308", **ok)),
        Case("temperature-nan", "POST", path, form(upload(WAV), temperature="nan", **ok)),
        Case("response-format-xml", "POST", path, form(upload(WAV), response_format="xml", **ok)),
        Case("stream-maybe", "POST", path, form(upload(WAV), stream="maybe", **ok)),
        Case("model-empty-spaces", "POST", path, form(upload(WAV), model="   ")),
        Case("model-unknown", "POST", path, form(upload(WAV), model="nobody/no-such-model"), 404),
        Case("model-is-a-voice", "POST", path, form(upload(WAV), model="en_US-joe-medium"), (400, 404)),
        Case("model-invalid-utf8", "POST", path, form(upload(WAV), model=b"\xff\xfe\xfa")),
        Case("prompt-10mb", "POST", path, form(upload(WAV), prompt="x" * TEN_MB, **ok), (400, 413)),
        Case("model-10mb", "POST", path, form(upload(WAV), model="m" * TEN_MB), (400, 413)),
        Case(
            "filename-10kb", "POST", path, form(Part("file", WAV, "a" * 10_000 + ".wav"), model="nobody/x"), (400, 404)
        ),
    ]
    if name == "transcriptions":
        cases += [
            Case("language-klingon", "POST", path, form(upload(WAV), language="klingon", **ok)),
            Case("language-path", "POST", path, form(upload(WAV), language="../en", **ok)),
            Case(
                "granularity-banana", "POST", path, form(upload(WAV), **{"timestamp_granularities[]": "banana"}, **ok)
            ),
        ]
    cases += [
        Case(f"model-path-{index}", "POST", path, form(upload(WAV), model=model_id), (400, 404))
        for index, model_id in enumerate(PATH_LIKE_MODEL_IDS)
    ]
    return [Case(f"{name}-{case.id}", case.method, case.path, case.body, case.status) for case in cases]


def speech_cases() -> list[Case]:
    path = "/v1/audio/speech"
    ok: dict[str, Any] = {"model": "tts-1", "voice": "alloy", "input": "Hello there."}
    cases = [
        Case("not-json", "POST", path, (b"{model: tts-1", {"Content-Type": "application/json"})),
        Case("json-list", "POST", path, as_json([ok])),
        Case("json-string", "POST", path, as_json("Hello there.")),
        Case(
            "invalid-utf8",
            "POST",
            path,
            (b'{"model": "tts-1", "voice": "alloy", "input": "\xff\xfe"}', {"Content-Type": "application/json"}),
        ),
        Case(
            "input-lone-surrogate",
            "POST",
            path,
            raw_json(b'{"model": "tts-1", "voice": "alloy", "input": "a\\ud800b"}'),
        ),
        Case("voice-lone-surrogate", "POST", path, raw_json(b'{"model": "tts-1", "voice": "\\udfff", "input": "hi"}')),
        Case("model-lone-surrogate", "POST", path, raw_json(b'{"model": "\\ud800", "voice": "alloy", "input": "hi"}')),
        Case("form-body", "POST", path, form(None, model="tts-1", voice="alloy", input="hi")),
        Case("empty-body", "POST", path, (b"", {"Content-Type": "application/json"})),
        Case("missing-input", "POST", path, as_json({"model": "tts-1", "voice": "alloy"})),
        Case("input-empty", "POST", path, as_json({**ok, "input": ""})),
        Case("input-whitespace", "POST", path, as_json({**ok, "input": " \n\t "})),
        Case("input-punctuation-only", "POST", path, as_json({**ok, "input": "?!... ---"})),
        Case("input-number", "POST", path, as_json({**ok, "input": 12345})),
        Case("input-null", "POST", path, as_json({**ok, "input": None})),
        Case("input-object", "POST", path, as_json({**ok, "input": {"text": "hi"}})),
        Case("input-10mb", "POST", path, as_json({**ok, "input": "word " * (TEN_MB // 5)}), 413),
        Case("speed-zero", "POST", path, as_json({**ok, "speed": 0})),
        Case("speed-huge", "POST", path, as_json({**ok, "speed": 1000})),
        Case("speed-word", "POST", path, as_json({**ok, "speed": "fast"})),
        Case("response-format-wav2", "POST", path, as_json({**ok, "response_format": "wav2"})),
        Case("sample-rate-negative", "POST", path, as_json({**ok, "sample_rate": -1})),
        Case("sample-rate-huge", "POST", path, as_json({**ok, "sample_rate": 10**9})),
        Case("stream-format-video", "POST", path, as_json({**ok, "stream_format": "video"})),
        Case("voice-unknown", "POST", path, as_json({**ok, "voice": "xx_XX-nobody-medium"}), 404),
        Case("voice-number", "POST", path, as_json({**ok, "voice": 7})),
        Case("model-unknown", "POST", path, as_json({**ok, "model": "nobody/no-such-model"}), 404),
        Case("model-is-whisper", "POST", path, as_json({**ok, "model": TINY_EN}), (400, 404)),
        Case("model-10mb", "POST", path, as_json({**ok, "model": "m" * TEN_MB}), 413),
    ]
    cases += [
        Case(f"voice-path-{index}", "POST", path, as_json({**ok, "voice": voice}), (400, 404))
        for index, voice in enumerate(PATH_LIKE_MODEL_IDS)
    ]
    cases += [
        Case(f"model-path-{index}", "POST", path, as_json({**ok, "model": model_id}), (400, 404))
        for index, model_id in enumerate(PATH_LIKE_MODEL_IDS)
    ]
    return [Case(f"speech-{case.id}", case.method, case.path, case.body, case.status) for case in cases]


RAW_PATH_LIKE_IDS = [
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "../../../../etc/passwd",
    "Systran/../../../../etc",
    "%2e%2e/%2e%2e/etc",
    "%00",
    "%ff%fe",
    "a/b/c/d/e",
    "C:%5CWindows",
    "x" * 5000,
]


def model_route_cases() -> list[Case]:
    cases = []
    unknown_status: int | tuple[int, ...]
    for method, prefix, unknown_status in [
        ("GET", "/v1/models", 404),
        ("POST", "/v1/models", (404, 409)),  # 409 hub_offline: the server may not download (tests run offline)
        ("DELETE", "/v1/models", 404),
        ("POST", "/api/ps", 404),
        ("DELETE", "/api/ps", 404),
    ]:
        slug = f"{method.lower()}-{prefix.strip('/').replace('/', '-')}"
        cases.append(Case(f"{slug}-unknown", method, f"{prefix}/nobody/no-such-model", status=unknown_status))
        cases += [
            Case(f"{slug}-path-{index}", method, f"{prefix}/{raw}", status=(400, 404))
            for index, raw in enumerate(RAW_PATH_LIKE_IDS)
        ]
    cases += [
        Case("registry-kind-bad", "GET", "/v1/registry?kind=banana"),
        Case("registry-kind-utf8", "GET", "/v1/registry?kind=%ff"),
        Case("post-on-models-list", "PUT", "/v1/models", status=405),
        Case("get-on-speech", "GET", "/v1/audio/speech", status=405),
        Case("unknown-route", "GET", "/v1/audio/nothing", status=404),
        Case("unknown-route-utf8", "GET", "/v1/%ff%fe", status=404),
    ]
    return cases


CASES = (
    stt_cases("/v1/audio/transcriptions") + stt_cases("/v1/audio/translations") + speech_cases() + model_route_cases()
)


def send(server: Server, case: Case) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        body, headers = case.body
        connection.putrequest(case.method, case.path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_4xx_in_the_error_shape(server: Server, case: Case) -> None:
    status, headers, body = send(server, case)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert status in expected, f"{case.id}: {status} {body[:500]!r}"
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert len(error["message"]) < 2000, "the message echoes the whole input back"
    assert server.alive()


# --- the live WebSocket: refusals come as an error message, then close 1008 ---

WS_CASES = {
    "model-unknown": {"model": "nobody/no-such-model"},
    "model-path": {"model": "../../../../etc/passwd"},
    "model-absolute": {"model": "/etc"},
    "model-is-a-voice": {"model": "en_US-joe-medium"},
    "response-format-xml": {"response_format": "xml"},
    "language-klingon": {"language": "klingon"},
    "model-5kb": {"model": "m" * 5_000},  # (over 8 KB, uvicorn answers the handshake 414 itself)
}


@pytest.mark.parametrize("query", WS_CASES.values(), ids=WS_CASES.keys())
def test_bad_live_session_parameters_get_an_error_message_and_1008(server: Server, query: dict[str, str]) -> None:
    from urllib.parse import urlencode

    url = server.url.replace("http://", "ws://") + "/v1/audio/transcriptions?" + urlencode(query)
    with connect(url, open_timeout=30, close_timeout=10) as websocket:
        message = json.loads(websocket.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=30)
    assert message["type"] == "error"
    assert set(message["error"]) == {"message", "type", "param", "code"}
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def test_garbage_frames_in_a_live_session_do_not_break_it(server: Server) -> None:
    url = server.url.replace("http://", "ws://") + f"/v1/audio/transcriptions?model={TINY_EN}"
    garbage = ["\xff not json", json.dumps({"type": "nonsense"}), json.dumps([1, 2, 3]), "", "{" * 10_000]
    with connect(url, open_timeout=30, close_timeout=10) as websocket:
        for frame in garbage:
            websocket.send(frame)
        for _ in garbage:
            reply = json.loads(websocket.recv(timeout=30))
            assert reply["type"] == "error"
            assert set(reply["error"]) == {"message", "type", "param", "code"}
        websocket.send(_wav(11.0)[44:])
        websocket.send(json.dumps({"type": "end"}))
        final = None
        while final is None:
            message = json.loads(websocket.recv(timeout=120))
            if message["type"] == "transcript.text.done":
                final = message["text"]
    assert "ask not what your country" in final.lower()
