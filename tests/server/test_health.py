"""/health and /health/ready on the shared server."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import Server

pytestmark = pytest.mark.server


def test_health_and_readiness(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
