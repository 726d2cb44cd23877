"""Live sessions against careless and hostile clients, black-box: a real server on a free port, real sockets.

A client that floods audio at network speed is held back (TCP flow control) and the server's memory stays
flat; a full inference queue makes a session's steps wait instead of ending it; a step that waits in the
queue when its client leaves never runs.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import wave
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, Server, running_server, word_error_rate
from tests.live.live_client import LiveResult, eventually_async, live_url, pcm_of, receive_all, send_paced, stream

pytestmark = pytest.mark.server
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def tight_server() -> Iterator[Server]:
    """One inference slot and room for one job in the queue: easy to fill."""
    with running_server({"INFERENCE_CONCURRENCY": "1", "MAX_QUEUED_REQUESTS": "1", "STT_MODEL_TTL": "-1"}) as running:
        yield running
        assert running.alive(), running.logs()


@pytest.fixture(scope="module")
def jfk() -> bytes:
    return pcm_of(AUDIO_DIR / "jfk.flac")


def wav_of(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(16_000)
        file.writeframes(pcm)
    return out.getvalue()


async def transcribe_file(server: Server, audio: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as http:
        return await http.post(
            "/v1/audio/transcriptions", data={"model": TINY_EN}, files={"file": ("long.wav", audio, "audio/wav")}
        )


async def queue_depth(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(r"^speaches_inference_queue_depth (\S+)$", text, re.MULTILINE)
    assert found, text[:500]
    return float(found.group(1))


async def _ref_count_is(http: httpx.AsyncClient, count: int) -> bool:
    models = (await http.get("/api/ps")).json()["models"]
    return sum(model["ref_count"] for model in models if model["id"] == TINY_EN) == count


async def test_a_flood_of_audio_is_held_back_and_memory_stays_flat(tight_server: Server, jfk: bytes) -> None:
    # Warm up: the model loaded and one session's biggest steps already taken, so growth below is the flood's.
    await stream(live_url(tight_server.url, model=TINY_EN), jfk * 3, speed=1000.0)
    rss_before = tight_server.rss_bytes()
    frame = jfk[:320_000]  # 10 s of speech per frame
    sent = 0
    peak_rss = rss_before
    health_answers = 0
    # A flooding client's own keepalive pings queue behind its data; it would time itself out. Not our problem.
    async with (
        connect(live_url(tight_server.url, model=TINY_EN), max_size=None, ping_interval=None) as ws,
        httpx.AsyncClient(base_url=tight_server.url, timeout=5) as http,
    ):
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))

        async def flood() -> None:
            nonlocal sent
            while True:
                await ws.send(frame)
                sent += len(frame)

        flooder = asyncio.create_task(flood())
        started = time.monotonic()
        # At least 15 s, and until the flooded session has confirmed something (slow on a busy machine).
        while time.monotonic() - started < 15.0 or not any(delta["delta"] for delta in result.deltas):
            assert time.monotonic() - started < 180.0, "the flooded session confirmed nothing in 3 minutes"
            await asyncio.sleep(0.5)
            # The event loop stays responsive while the session is flooded.
            assert (await http.get("/health")).status_code == 200
            health_answers += 1
            peak_rss = max(peak_rss, tight_server.rss_bytes())
        flood_seconds = time.monotonic() - started
        assert not flooder.done(), flooder
        flooder.cancel()
        ws.transport.abort()
        receiver.cancel()
        # The session ends with its client: the lease comes back once its last step is done.
        await eventually_async(lambda: _ref_count_is(http, 0), limit_seconds=30, what="the lease released")
    # At network speed this would be gigabytes; held back, about as much as the session transcribes.
    assert sent < 64 * MiB, f"{sent / MiB:.0f} MiB accepted in {flood_seconds:.0f} s"
    growth = peak_rss - rss_before
    assert growth < 100 * MiB, f"the server grew by {growth / MiB:.0f} MiB while {sent / MiB:.0f} MiB were sent"
    assert health_answers >= 10
    assert tight_server.alive()


async def test_a_full_queue_makes_a_session_wait_not_end(tight_server: Server, jfk: bytes) -> None:
    long_file = wav_of(jfk * 12)  # about 2 minutes of audio: each request holds the slot for a while
    # One request runs, one waits: the queue (MAX_QUEUED_REQUESTS=1) is full before the session starts.
    running = asyncio.create_task(transcribe_file(tight_server, long_file))
    async with httpx.AsyncClient(base_url=tight_server.url, timeout=5) as http:
        await eventually_async(lambda: _running(http), what="the first request running")
    queued = asyncio.create_task(transcribe_file(tight_server, long_file))
    async with httpx.AsyncClient(base_url=tight_server.url, timeout=5) as http:
        await eventually_async(lambda: _queue_is(http, 1), what="the second request queued")
    result = await stream(live_url(tight_server.url, model=TINY_EN), jfk, speed=2.0, time_limit=300)
    assert result.close_code == 1000, (result.close_code, result.close_reason, result.errors)
    assert not result.errors
    assert word_error_rate(JFK_TEXT, result.final_text or "") <= 0.1
    assert "inference queue full; the live step waits" in tight_server.logs()
    for request in (running, queued):
        assert (await request).status_code == 200


async def test_a_step_queued_when_the_client_leaves_never_runs(tight_server: Server, jfk: bytes) -> None:
    running = asyncio.create_task(transcribe_file(tight_server, wav_of(jfk * 12)))
    async with httpx.AsyncClient(base_url=tight_server.url, timeout=5) as http:
        await eventually_async(lambda: _running(http), what="the file request running")
        async with connect(live_url(tight_server.url, model=TINY_EN)) as ws:
            await send_paced(ws, jfk[: 2 * 32000], speed=20.0, frame_bytes=3200)
            await eventually_async(lambda: _queue_is(http, 1), what="the live step queued")
        # The client has gone: its step leaves the queue at once, while the file request still runs.
        await eventually_async(lambda: _queue_is(http, 0), limit_seconds=5, what="the queued step cancelled")
        assert not running.done(), "the check needs the slot still taken"
    assert (await running).status_code == 200


async def test_a_session_after_a_flood_is_served(tight_server: Server, jfk: bytes) -> None:
    result = await stream(live_url(tight_server.url, model=TINY_EN), jfk, speed=4.0, time_limit=120)
    assert result.close_code == 1000
    assert word_error_rate(JFK_TEXT, result.final_text or "") <= 0.1


async def _running(http: httpx.AsyncClient) -> bool:
    text = (await http.get("/metrics")).text
    found = re.search(r"^speaches_inference_running (\S+)$", text, re.MULTILINE)
    return found is not None and float(found.group(1)) >= 1


async def _queue_is(http: httpx.AsyncClient, depth: int) -> bool:
    return await queue_depth(http) == depth
