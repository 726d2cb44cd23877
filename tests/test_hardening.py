"""Access control, CORS, request ids and metrics: the middleware every request passes through."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import Server, running_server

API_KEY = "sk-test_0123456789-abcdef"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def locked_server() -> Iterator[Server]:
    with running_server({"API_KEY": API_KEY, "ALLOW_ORIGINS": f"{ORIGIN},https://other.example"}) as server:
        yield server


def assert_error_shape(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- API key ---


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
    assert missing["type"] == "authentication_error"
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


# --- CORS ---


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


def test_no_key_configured_means_open(server: Server) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 200


# --- request ids ---


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


# --- metrics ---


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_template(server: Server) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    for _ in range(3):
        httpx.get(f"{server.url}/health")
    for index in range(5):
        httpx.get(f"{server.url}/random/path/{index}")
    httpx.request("PROPFIND", f"{server.url}/health")
    after = httpx.get(f"{server.url}/metrics").text

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("speaches_http_requests_total", method="GET", route="/health", status="200") == 3
    # Raw paths never become labels: five different paths, one series.
    assert grew("speaches_http_requests_total", method="GET", route="unmatched", status="404") == 5
    assert "/random/path" not in after
    assert grew("speaches_http_requests_total", method="OTHER", route="/health", status="405") == 1
    assert grew("speaches_http_request_duration_seconds_count", method="GET", route="/health") == 3
    for name in (
        "speaches_inference_queue_depth",
        "speaches_inference_running",
        "speaches_inference_concurrency",
        "speaches_models_loaded",
        "process_resident_memory_bytes",
        "speaches_audio_seconds_total",
        "speaches_model_loads_total",
        "speaches_model_unloads_total",
    ):
        assert re.search(rf"^{name}[{{ ]", after, re.MULTILINE), name
    assert "_created" not in after


def test_metrics_label_a_refused_request_with_its_route(locked_server: Server) -> None:
    httpx.get(f"{locked_server.url}/v1/models")
    text = httpx.get(f"{locked_server.url}/metrics", headers=bearer(API_KEY)).text
    assert _sample(text, "speaches_http_requests_total", method="GET", route="/v1/models", status="401") >= 1


def test_metrics_count_audio_seconds_and_model_loads(server: Server) -> None:
    from openai import OpenAI

    from tests.helpers import AUDIO_DIR, TINY_EN

    client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    before = httpx.get(f"{server.url}/metrics").text
    client.audio.transcriptions.create(model=TINY_EN, file=(AUDIO_DIR / "jfk.flac").open("rb"))
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format="pcm")
    live_url = server.url.replace("http://", "ws://") + f"/v1/audio/transcriptions?model={TINY_EN}"
    with connect(live_url, open_timeout=30) as websocket:
        websocket.send(bytes(2 * 16_000 * 3))  # three seconds of silence
        websocket.send('{"type": "end"}')
        for _message in websocket:
            pass
    after = httpx.get(f"{server.url}/metrics").text

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("speaches_audio_seconds_total", kind="transcription") == pytest.approx(11.0, abs=0.1)
    # pcm is 24 kHz 16-bit mono: the speech counted is the speech sent.
    assert grew("speaches_audio_seconds_total", kind="speech") == pytest.approx(len(speech.content) / 48_000, rel=0.05)
    assert grew("speaches_audio_seconds_total", kind="live") == pytest.approx(3.0)
    assert _sample(after, "speaches_models_loaded", kind="stt") >= 1
    assert _sample(after, "speaches_model_loads_total", kind="stt") >= 1
    assert grew("speaches_http_requests_total", method="POST", route="/v1/audio/transcriptions", status="200") == 1


def test_405_lists_every_method_of_the_path(server: Server) -> None:
    # /v1/models/{model_id} is three routes (GET, POST, DELETE); Starlette alone would name only one.
    response = httpx.put(f"{server.url}/v1/models/Systran/faster-whisper-tiny.en")
    assert_error_shape(response, 405)
    assert response.headers["allow"] == "DELETE, GET, POST"
    assert httpx.put(f"{server.url}/health").headers["allow"] == "GET"


async def test_an_unexpected_failure_is_a_500_in_the_error_shape_with_the_request_id() -> None:
    """In-process, with a route that fails on purpose: no real endpoint should ever do this."""
    from speaches.config import Settings
    from speaches.main import create_app

    app = create_app(Settings())

    async def broken() -> None:
        raise RuntimeError("deliberate failure")

    app.add_api_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/broken", headers={"X-Request-Id": "boom-1"})
    assert_error_shape(response, 500)
    assert response.json()["error"]["type"] == "server_error"
    assert "deliberate" not in response.text  # internals stay in the log
    assert response.headers["x-request-id"] == "boom-1"


def test_streamed_bodies_over_the_limit_get_413_whatever_the_endpoint() -> None:
    """Chunked bodies (no Content-Length) are cut off at the limit, even mid-parse, with 413 not 400."""
    with running_server({"MAX_UPLOAD_BYTES": "100000"}) as small:

        def body(head: bytes, filler: bytes) -> Iterator[bytes]:
            yield head
            for _ in range(20):
                yield filler * 10_000

        multipart_head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for path, head, filler, content_type in [
            ("/v1/audio/transcriptions", multipart_head, b"\0", "multipart/form-data; boundary=x"),
            ("/v1/audio/translations", multipart_head, b"\0", "multipart/form-data; boundary=x"),
            ("/v1/audio/speech", b'{"model": "tts-1", "input": "', b"a", "application/json"),
        ]:
            response = httpx.post(
                f"{small.url}{path}", content=body(head, filler), headers={"content-type": content_type}
            )
            assert assert_error_shape(response, 413)["code"] == "request_too_large"
        assert httpx.get(f"{small.url}/health").status_code == 200
