"""The API key check, shared by every door that needs it (HTTP routes, WebSocket sessions).

`API_KEY` unset means the server is open. Set, a client presents the key as `Authorization: Bearer <key>`
(WebSocket clients, which cannot always set headers from a browser, may pass `api_key=<key>` in the query
instead, or offer the subprotocol `openai-insecure-api-key.<key>`, as OpenAI's Realtime API lets browsers).
The comparison is constant-time so the key cannot be guessed one character at a time from response timings.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from speaches.config import Settings


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is no such header.

    The scheme is case-insensitive (RFC 7235); a header with another scheme or no token counts as absent.
    """
    authorization = headers.get("authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


def subprotocol_key(headers: Mapping[str, str]) -> str | None:
    """The key offered as the WebSocket subprotocol `openai-insecure-api-key.<key>`, if any."""
    for protocol in (headers.get("sec-websocket-protocol") or "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX) and len(protocol) > len(KEY_SUBPROTOCOL_PREFIX):
            return protocol[len(KEY_SUBPROTOCOL_PREFIX) :]
    return None


def api_key_matches(settings: Settings, presented: str | None) -> bool:
    """Whether a request presenting `presented` may use the API: always when no API_KEY is configured."""
    if settings.api_key is None:
        return True
    if presented is None:
        return False
    expected = settings.api_key.get_secret_value()
    return hmac.compare_digest(presented.encode(), expected.encode())
