"""/metrics: requests counted by route template, refused requests labelled with their route, audio seconds and
model loads."""

from __future__ import annotations

import re

import httpx
import pytest
from websockets.sync.client import connect

from tests.helpers import Server
from tests.server.http_checks import API_KEY, bearer

pytestmark = pytest.mark.server


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_template(server: Server) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    for _ in range(3):
        httpx.get(f"{server.url}/health")
    for index in range(5):
        httpx.get(f"{server.url}/random/path/{index}")
    httpx.request("PROPFIND", f"{server.url}/health")
    after = httpx.get(f"{server.url}/metrics").text

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("speaches_http_requests_total", method="GET", route="/health", status="200") == 3
    # Raw paths never become labels: five different paths, one series.
    assert grew("speaches_http_requests_total", method="GET", route="unmatched", status="404") == 5
    assert "/random/path" not in after
    assert grew("speaches_http_requests_total", method="OTHER", route="/health", status="405") == 1
    assert grew("speaches_http_request_duration_seconds_count", method="GET", route="/health") == 3
    for name in (
        "speaches_inference_queue_depth",
        "speaches_inference_running",
        "speaches_inference_concurrency",
        "speaches_models_loaded",
        "process_resident_memory_bytes",
        "speaches_audio_seconds_total",
        "speaches_model_loads_total",
        "speaches_model_unloads_total",
    ):
        assert re.search(rf"^{name}[{{ ]", after, re.MULTILINE), name
    assert "_created" not in after


def test_metrics_label_a_refused_request_with_its_route(locked_server: Server) -> None:
    httpx.get(f"{locked_server.url}/v1/models")
    text = httpx.get(f"{locked_server.url}/metrics", headers=bearer(API_KEY)).text
    assert _sample(text, "speaches_http_requests_total", method="GET", route="/v1/models", status="401") >= 1


def test_metrics_count_audio_seconds_and_model_loads(server: Server) -> None:
    from openai import OpenAI

    from tests.helpers import AUDIO_DIR, TINY_EN

    client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    before = httpx.get(f"{server.url}/metrics").text
    client.audio.transcriptions.create(model=TINY_EN, file=(AUDIO_DIR / "jfk.flac").open("rb"))
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format="pcm")
    live_url = server.url.replace("http://", "ws://") + f"/v1/audio/transcriptions?model={TINY_EN}"
    with connect(live_url, open_timeout=30) as websocket:
        websocket.send(bytes(2 * 16_000 * 3))  # three seconds of silence
        websocket.send('{"type": "end"}')
        for _message in websocket:
            pass
    after = httpx.get(f"{server.url}/metrics").text

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("speaches_audio_seconds_total", kind="transcription") == pytest.approx(11.0, abs=0.1)
    # pcm is 24 kHz 16-bit mono: the speech counted is the speech sent.
    assert grew("speaches_audio_seconds_total", kind="speech") == pytest.approx(len(speech.content) / 48_000, rel=0.05)
    assert grew("speaches_audio_seconds_total", kind="live") == pytest.approx(3.0)
    assert _sample(after, "speaches_models_loaded", kind="stt") >= 1
    assert _sample(after, "speaches_model_loads_total", kind="stt") >= 1
    assert grew("speaches_http_requests_total", method="POST", route="/v1/audio/transcriptions", status="200") == 1
