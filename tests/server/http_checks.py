"""What the server-wide HTTP tests share: the key and origin of the locked server, the error-shape check."""

from __future__ import annotations

import httpx

API_KEY = "sk-test_0123456789-abcdef"
ORIGIN = "https://app.example"


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
