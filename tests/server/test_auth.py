"""The API key check shared by the HTTP middleware and WebSocket sessions."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from speaches.auth import api_key_matches, bearer_token
from speaches.config import Settings


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("abc", None),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token({"authorization": header}) == token


def test_no_authorization_header() -> None:
    assert bearer_token({}) is None


def test_api_key_matches() -> None:
    open_server = Settings(api_key=None)
    assert api_key_matches(open_server, None)
    assert api_key_matches(open_server, "anything")
    locked = Settings(api_key=SecretStr("s3cret-é"))
    assert api_key_matches(locked, "s3cret-é")
    assert not api_key_matches(locked, None)
    assert not api_key_matches(locked, "")
    assert not api_key_matches(locked, "s3cret")
    assert not api_key_matches(locked, "s3cret-é ")
