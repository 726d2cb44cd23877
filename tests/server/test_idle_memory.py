"""A fresh server that has served nothing stays under 250 MB resident."""

from __future__ import annotations

import pytest

from tests.helpers import Server, running_server

pytestmark = pytest.mark.server


def test_idle_server_stays_small(server: Server) -> None:
    # Measured on a fresh server: the shared one may already hold models from other tests.
    with running_server() as fresh:
        assert fresh.rss_bytes() < 250 * 1024 * 1024
