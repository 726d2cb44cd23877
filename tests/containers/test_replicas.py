"""Three replicas behind deploy/nginx/speaches.conf on loopback: spread, WebSocket upgrade, a replica lost.

The replicas are plain `speaches serve` processes (what the Kubernetes pods run); nginx is Debian's
package, which `.ci/run` installs with podman, so these tests carry the `container` marker too.
The soak through the same setup, with figures, is `bench/replicas.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.containers.balancer import Balancer, config_for, nginx_in_front_of
from tests.helpers import AUDIO_DIR, JFK_TEXT, LAMP_TEXT, TINY_EN, Server, word_error_rate
from tests.live.live_client import live_url, pcm_of, stream

# `server` too: they start real servers (in containers, or as processes), so the fast run leaves them out.
pytestmark = [pytest.mark.container, pytest.mark.server]

REPLICAS = 3


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Server]]:
    servers = [Server({"STT_MODEL_TTL": "-1", "PRELOAD_MODELS": TINY_EN}) for _ in range(REPLICAS)]
    try:
        for server in servers:
            server.start()
        for server in servers:  # warm, as the readiness probe would require
            deadline = time.monotonic() + 120
            while httpx.get(f"{server.url}/health/ready", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, server.logs()
                time.sleep(0.2)
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def balancer(replicas: list[Server]) -> Iterator[Balancer]:
    with nginx_in_front_of([server.port for server in replicas]) as running:
        yield running


def transcribe(url: str, audio: str = "jfk.flac") -> httpx.Response:
    with (AUDIO_DIR / audio).open("rb") as file:
        return httpx.post(f"{url}/v1/audio/transcriptions", data={"model": TINY_EN}, files={"file": file}, timeout=120)


def test_config_keeps_the_shipped_directives() -> None:
    config = config_for([9001, 9002], 9000)
    assert "server 127.0.0.1:9001 max_fails=1 fail_timeout=5s;" in config
    assert "server 127.0.0.1:9002 max_fails=1 fail_timeout=5s;" in config
    assert "127.0.0.1:800" not in config
    for directive in ("least_conn;", "proxy_set_header Upgrade $http_upgrade;", "proxy_buffering off;"):
        assert directive in config


def test_requests_spread_over_every_replica(balancer: Balancer, replicas: list[Server]) -> None:
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: transcribe(balancer.url), range(6)))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert word_error_rate(JFK_TEXT, answer.json()["text"]) <= 0.1
    served_by = {upstreams[-1] for _at, status, upstreams in balancer.log_entries() if status == 200}
    assert served_by == {f"127.0.0.1:{server.port}" for server in replicas}


async def test_live_session_through_the_websocket_upgrade(balancer: Balancer) -> None:
    pcm = pcm_of(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")
    result = await stream(live_url(balancer.url, model=TINY_EN), pcm, speed=4.0)
    assert not result.errors, result.errors
    assert result.final_text is not None
    assert word_error_rate(LAMP_TEXT, result.final_text) <= 0.34, result.final_text
    assert any(status == 101 for _at, status, _upstream in balancer.log_entries())


def in_progress(server: Server, method: str) -> float:
    with contextlib.suppress(httpx.HTTPError):
        for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
            if line.startswith(f'speaches_http_requests_in_progress{{method="{method}"}}'):
                return float(line.split()[-1])
    return 0.0


def test_a_replica_killed_mid_request_fails_only_that_request(balancer: Balancer, replicas: list[Server]) -> None:
    """Last: it kills a replica. The request on it gets a clean 502; the next ones go to the others."""
    outcome: dict[str, Any] = {}
    request = threading.Thread(target=lambda: outcome.update(response=transcribe(balancer.url, "multilingual.mp3")))
    request.start()
    deadline = time.monotonic() + 30
    while not (busy := [server for server in replicas if in_progress(server, "POST") >= 1]):
        assert time.monotonic() < deadline, "the long transcription never reached a replica"
        time.sleep(0.02)
    (victim,) = busy
    assert victim.process is not None
    os.kill(victim.process.pid, signal.SIGKILL)
    request.join(60)

    lost = outcome["response"]
    assert lost.status_code == 502
    assert lost.headers["content-type"] == "application/json"
    assert lost.json()["error"]["code"] == "replica_unavailable"
    assert set(lost.json()["error"]) == {"message", "type", "param", "code"}

    # Everything after it is served, by the two that are left: nginx passes over the dead one.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: transcribe(balancer.url), range(8)))
    assert [answer.status_code for answer in answers] == [200] * 8, [answer.text for answer in answers]
    survivors = {f"127.0.0.1:{server.port}" for server in replicas if server is not victim}
    served_after = {upstreams[-1] for _at, _status, upstreams in balancer.log_entries()[-8:]}
    assert served_after <= survivors


async def test_a_replica_killed_mid_session_closes_that_session_and_others_go_on(
    balancer: Balancer, replicas: list[Server]
) -> None:
    """After the test above: kills a second replica, under a live session; the last one takes over."""
    alive = [server for server in replicas if server.alive()]
    assert len(alive) == 2
    pcm = pcm_of(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")
    frame = 3200  # 100 ms
    async with connect(live_url(balancer.url, model=TINY_EN)) as websocket:
        await websocket.send(pcm[:frame])
        deadline = time.monotonic() + 30
        while not (holding := [server for server in alive if in_progress(server, "WEBSOCKET") >= 1]):
            assert time.monotonic() < deadline, "the session never reached a replica"
            await asyncio.sleep(0.05)
        (victim,) = holding
        assert victim.process is not None
        os.kill(victim.process.pid, signal.SIGKILL)
        # The client learns at once: nginx drops the connection when the replica's side goes.
        killed_at = time.monotonic()

        async def keep_streaming() -> None:
            for offset in range(frame, len(pcm), frame):
                await websocket.send(pcm[offset : offset + frame])
                await asyncio.sleep(0.1)
            while True:
                await websocket.recv()

        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(keep_streaming(), timeout=20)
        assert time.monotonic() - killed_at < 20

    # A new session goes to the replica left, and so does a plain request.
    result = await stream(live_url(balancer.url, model=TINY_EN), pcm, speed=4.0)
    assert result.final_text is not None, result.messages
    assert word_error_rate(LAMP_TEXT, result.final_text) <= 0.34, result.final_text
    answer = await asyncio.to_thread(transcribe, balancer.url)
    assert answer.status_code == 200, answer.text
