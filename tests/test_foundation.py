"""The app skeleton: health, the error shape for unknown routes, the upload limit, idle memory."""

from __future__ import annotations

import httpx

from tests.helpers import Server, running_server


def test_health_and_readiness(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_unknown_route_answers_in_openai_error_shape(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/nothing-here")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "/docs" in error["message"]


def test_upload_over_the_limit_is_refused_with_413() -> None:
    with running_server({"MAX_UPLOAD_BYTES": "100000"}) as small:
        body = b"\0" * 200_000
        declared = httpx.post(
            f"{small.url}/v1/audio/transcriptions", files={"file": ("a.wav", body)}, data={"model": "whisper-1"}
        )
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"

        def chunked() -> object:
            # A valid multipart start, so the parser reads on (zeros alone it refuses at once with 400).
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            for _ in range(20):
                yield b"\0" * 10_000

        streamed = httpx.post(
            f"{small.url}/v1/audio/transcriptions",
            content=chunked(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert streamed.status_code == 413
        assert httpx.get(f"{small.url}/health").status_code == 200


def test_idle_server_stays_small(server: Server) -> None:
    # Measured on a fresh server: the shared one may already hold models from other tests.
    with running_server() as fresh:
        assert fresh.rss_bytes() < 250 * 1024 * 1024
