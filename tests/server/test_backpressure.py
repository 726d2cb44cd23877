"""A full inference queue answers 429 with Retry-After in the error shape, while the accepted requests finish."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI, RateLimitError

from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, running_server, word_error_rate
from tests.server.probes import metric, wait_for

pytestmark = pytest.mark.server


def test_full_queue_answers_429_and_accepted_requests_finish() -> None:
    env = {"INFERENCE_CONCURRENCY": "1", "MAX_QUEUED_REQUESTS": "1", "PRELOAD_MODELS": TINY_EN}
    with running_server(env) as server:
        wait_for(lambda: httpx.get(f"{server.url}/health/ready").status_code == 200, 120, "preloaded model")
        client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300)
        jfk = (AUDIO_DIR / "jfk.flac").read_bytes()
        barrier = threading.Barrier(6)

        def transcribe(_index: int) -> str | RateLimitError:
            barrier.wait()
            try:
                return client.audio.transcriptions.create(model=TINY_EN, file=("jfk.flac", jfk))
            except RateLimitError as busy:
                return busy

        with ThreadPoolExecutor(6) as threads:
            results = list(threads.map(transcribe, range(6)))
        refused = [result for result in results if isinstance(result, RateLimitError)]
        accepted = [result for result in results if not isinstance(result, RateLimitError)]
        # One runs, one waits, the rest are refused at once: at least two of each.
        assert len(refused) >= 2, results
        assert len(accepted) >= 2, results
        for busy in refused:
            assert busy.status_code == 429
            retry_after = busy.response.headers["retry-after"]
            assert retry_after.isdigit()
            assert int(retry_after) >= 1
            error = busy.response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "rate_limit_exceeded"
            assert error["code"] == "rate_limit_exceeded"
        for transcription in accepted:
            assert word_error_rate(JFK_TEXT, transcription.text) < 0.1  # type: ignore[union-attr]
        assert metric(server, "speaches_inference_queue_depth") == 0
        assert metric(server, "speaches_inference_running") == 0
