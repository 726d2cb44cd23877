from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Server, running_server
from tests.server.http_checks import API_KEY, ORIGIN


@pytest.fixture(scope="package")
def locked_server() -> Iterator[Server]:
    """A server that needs API_KEY and allows ORIGIN: one for the whole package, started by its first user."""
    with running_server({"API_KEY": API_KEY, "ALLOW_ORIGINS": f"{ORIGIN},https://other.example"}) as server:
        yield server
