"""MAX_UPLOAD_BYTES: bodies over the limit get 413 in the error shape, declared or streamed, on every endpoint
that takes one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import running_server
from tests.server.http_checks import assert_error_shape

pytestmark = pytest.mark.server


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


def test_streamed_bodies_over_the_limit_get_413_whatever_the_endpoint() -> None:
    """Chunked bodies (no Content-Length) are cut off at the limit, even mid-parse, with 413 not 400."""
    with running_server({"MAX_UPLOAD_BYTES": "100000", "MAX_JSON_BODY_BYTES": "100000"}) as small:

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
