"""One server for the Wyoming tests: HTTP and Wyoming on free ports, the bundled tiny.en as default model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import TINY_EN, Server, free_port


@pytest.fixture(scope="package")
def wyoming_server() -> Iterator[Server]:
    port = free_port()
    server = Server(
        {
            "WYOMING_URI": f"tcp://127.0.0.1:{port}",
            "WHISPER__MODEL": TINY_EN,
            "STT_MODEL_TTL": "-1",
            "TTS_MODEL_TTL": "-1",
        }
    )
    server.wyoming_port = port  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
        assert server.alive(), f"the server died during the tests:\n{server.logs()}"
    finally:
        server.stop()
