"""Issue 11.1: a client that stops reading (or reads at real time) holds no inference capacity, and one
that stalls past SEND_TIMEOUT_SECONDS is dropped, giving back its model lease.

Observed from outside: `speaches_inference_running` on /metrics and the voice's `ref_count` on /api/ps.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.hardening.observe import VOICE, leases, metric, read_until_closed, stalled_speech, wait_for
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, Server, running_server, word_error_rate

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def patient_server() -> Iterator[Server]:
    """Never drops a stalled client during these tests: what they show is the pool, not the send timeout."""
    env = {
        "INFERENCE_CONCURRENCY": "2",
        "SEND_TIMEOUT_SECONDS": "900",
        "SSE_PING_SECONDS": "0.5",
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
    }
    with running_server(env) as server:
        yield server


def test_stalled_readers_hold_no_inference_slot(patient_server: Server) -> None:
    server = patient_server
    stalled = [stalled_speech(server) for _ in range(3)] + [stalled_speech(server, sse=True)]
    try:
        # Each stream synthesizes until the buffers to its client are full, then waits for a reader
        # that never comes: four open streams hold the voice, and no inference runs for them.
        wait_for(
            lambda: leases(server, VOICE) == 4 and metric(server, "speaches_inference_running") == 0,
            300,
            "four stalled streams and an idle pool",
        )
        time.sleep(1.0)
        assert metric(server, "speaches_inference_running") == 0

        # A slow reader (a player at about real time) streams meanwhile and is never cut.
        slow: dict[str, object] = {}
        slow_thread = threading.Thread(target=read_slowly, args=(server, slow))
        slow_thread.start()

        client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=240)
        spoken = client.audio.speech.create(model="tts-1", voice="alloy", input="One sentence.", response_format="mp3")
        assert spoken.content[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2") or spoken.content[:3] == b"ID3"
        with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
            text = client.audio.transcriptions.create(model=TINY_EN, file=audio).text
        assert word_error_rate(JFK_TEXT, text) < 0.15, text

        slow_thread.join(timeout=300)
        assert slow.get("error") is None, slow
        assert slow["complete"] is True
        pcm_bytes = int(slow["pcm_bytes"])  # type: ignore[call-overload]
        assert pcm_bytes % 2 == 0
        assert pcm_bytes > 100_000
        assert slow["pings"], "a streamed answer that lasts seconds carries keep-alive comments"
        assert leases(server, VOICE) == 4  # the stalled ones still wait, holding only their lease
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: leases(server, VOICE) == 0, 60, "the closed streams to give back the voice")


def read_slowly(server: Server, outcome: dict[str, object]) -> None:
    """SSE speech read in small bites with pauses for a few seconds, then to its end."""
    request = {"model": "tts-1", "voice": "alloy", "stream_format": "sse", "response_format": "pcm"}
    request["input"] = "A player reads this at its own pace. " * 6
    pcm_bytes = 0
    pings = 0
    complete = False
    try:
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=request, timeout=240) as response:
            assert response.status_code == 200, response.read()
            started = time.monotonic()
            for line in response.iter_lines():
                if time.monotonic() - started < 4:
                    time.sleep(0.3)
                if line.startswith(":"):
                    pings += 1
                elif line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    if event["type"] == "speech.audio.delta":
                        pcm_bytes += len(base64.b64decode(event["audio"]))
                    elif event["type"] == "speech.audio.done":
                        complete = True
    except Exception as error:  # reported to the test thread
        outcome["error"] = repr(error)
    outcome.update(pcm_bytes=pcm_bytes, pings=pings, complete=complete)


def test_a_client_that_stops_reading_is_dropped_and_gives_its_model_back() -> None:
    env = {"SEND_TIMEOUT_SECONDS": "2", "TTS_MODEL_TTL": "-1"}
    with running_server(env) as server:
        stalled = stalled_speech(server)
        try:
            wait_for(lambda: "ended its response" in server.logs(), 300, "the stalled response to be ended")
            wait_for(lambda: leases(server, VOICE) == 0, 30, "the voice's lease to come back")
            received, closed = read_until_closed(stalled, timeout=10)
            assert closed, "the server must drop the connection, not keep it open"
            assert received > 0
        finally:
            stalled.close()
        assert metric(server, "speaches_inference_running") == 0
        # One line of our own, no traceback, no uvicorn complaint about an unfinished response.
        logs = server.logs()
        assert "Traceback" not in logs, logs
        assert "without completing response" not in logs, logs
        assert "client read nothing for 2 s" in logs
        assert httpx.post(
            f"{server.url}/v1/audio/speech",
            json={"model": "tts-1", "input": "Still here.", "voice": "alloy"},
            timeout=120,
        ).is_success
