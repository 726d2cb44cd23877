"""The Wyoming listener: started and stopped with the application, beside the HTTP server.

It listens on `WYOMING_URI` (`tcp://HOST:PORT` or `unix:///path`) and serves each connection with
a :class:`~speaches.wyoming.connection.Connection` on the application's own event loop and
services, so Wyoming and HTTP share one model manager and one inference pool. On shutdown it stops
listening and ends every connection, which gives back their leases and pool work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import stat
from pathlib import Path

from speaches.config import parse_wyoming_uri
from speaches.state import AppState
from speaches.wyoming.connection import Connection
from speaches.wyoming.framing import MAX_HEADER_BYTES
from speaches.wyoming.metrics import WYOMING_CONNECTIONS

logger = logging.getLogger(__name__)


class WyomingServer:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._socket_path: Path | None = None

    async def start(self, uri: str) -> None:
        try:
            await self._listen(uri)
        except OSError as error:  # the port is taken, the address is not ours, the folder is missing...
            raise RuntimeError(f"Cannot serve the Wyoming protocol on WYOMING_URI={uri}: {error}") from error

    async def _listen(self, uri: str) -> None:
        scheme, address, port = parse_wyoming_uri(uri)
        if scheme == "tcp":
            assert port is not None
            self._server = await asyncio.start_server(self._serve, address, port, limit=MAX_HEADER_BYTES)
            bound = ", ".join(str(sock.getsockname()[:2]) for sock in self._server.sockets)
            logger.info("Wyoming protocol listening on %s (%s)", uri, bound)
            if self.state.settings.api_key is not None and not is_loopback(address):
                logger.warning(
                    "Wyoming listens on %s, beyond this machine, while API_KEY is set: the Wyoming protocol has "
                    "no authentication, so anyone who can reach that port can transcribe and synthesize without "
                    "the key. Bind WYOMING_URI to 127.0.0.1 or restrict the port to trusted hosts.",
                    address,
                )
        else:
            self._socket_path = Path(address)
            _remove_stale_socket(self._socket_path)
            self._server = await asyncio.start_unix_server(self._serve, address, limit=MAX_HEADER_BYTES)
            logger.info("Wyoming protocol listening on %s", uri)

    @property
    def port(self) -> int | None:
        """The TCP port bound (useful with port 0)."""
        if self._server is None or self._socket_path is not None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        WYOMING_CONNECTIONS.inc()
        try:
            await Connection(self.state, reader, writer).serve()
        except asyncio.CancelledError:
            pass  # server shutdown
        except Exception:
            logger.exception("a Wyoming connection failed")
        finally:
            WYOMING_CONNECTIONS.dec()
            self._connections.discard(task)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.wait(connections, timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None
        if self._socket_path is not None:
            _remove_stale_socket(self._socket_path)
        logger.info("Wyoming protocol server stopped")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file a previous run left behind; never any other kind of file."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            path.unlink()
