from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.helpers import Server, running_server

SHARED_SERVER_FIXTURES = {"server", "client"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the shared server (or its client) is a server test, in whatever module it sits.

    Modules that start servers of their own say so themselves (`pytestmark = pytest.mark.server`).
    """
    for item in items:
        if SHARED_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Only a test marked `server` may start one (its fixtures included), so that the marker stays true and
    `pytest -m "not server"` never starts a server behind the developer's back."""
    if item.get_closest_marker("server"):
        Server.refusal = None
    else:
        Server.refusal = (
            f"{item.nodeid} starts a server but is not marked `server`: "
            "add `pytestmark = pytest.mark.server` to its module"
        )


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
