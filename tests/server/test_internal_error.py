"""An unexpected exception in a route: a 500 in the error shape that keeps the request id and hides the
internals (in-process, through the ASGI app)."""

from __future__ import annotations

import httpx

from tests.server.http_checks import assert_error_shape


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
