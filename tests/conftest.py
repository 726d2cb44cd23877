from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.helpers import Server, running_server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One shared server for tests that do not change settings. Models stay loaded between tests."""
    with running_server({"STT_MODEL_TTL": "-1", "TTS_MODEL_TTL": "-1"}) as running:
        yield running
        assert running.alive(), f"the shared server died during the tests:\n{running.logs()}"


@pytest.fixture(scope="session")
def client(server: Server) -> OpenAI:
    """The official openai SDK pointed at the shared server."""
    return OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=300)
