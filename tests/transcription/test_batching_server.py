"""Cross-request batching through a real server: concurrent openai SDK clients and live sessions share the
model's batches and get what each gets alone; the inference pool's limits still hold."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from speaches.inference import PoolBusyError
from tests.helpers import AUDIO_DIR, JFK_TEXT, LAMP_TEXT, TINY_EN, Server, running_server, word_error_rate
from tests.live.live_client import live_url, pcm_of, stream

pytestmark = pytest.mark.server

JFK = AUDIO_DIR / "jfk.flac"
LAMP = AUDIO_DIR / "turn_on_the_living_room_lamp.wav"


@pytest.fixture(scope="module")
def batching_server() -> Iterator[Server]:
    env = {
        "STT_MODEL_TTL": "-1",
        "INFERENCE_CONCURRENCY": "4",
        "MAX_QUEUED_REQUESTS": "2",
        "WHISPER__MAX_BATCH_SIZE": "8",
        "WHISPER__BATCH_WAIT_MS": "50",
    }
    with running_server(env) as server:
        yield server


def sdk(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=300)


def batch_counts(server: Server, call: str) -> tuple[float, float]:
    """(batches, windows) of one CTranslate2 call so far, from /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text

    def value(series: str) -> float:
        match = re.search(rf'^{series}{{call="{call}"}} (\S+)$', text, re.MULTILINE)
        assert match, f"{series} for {call} missing"
        return float(match.group(1))

    return value("speaches_whisper_batch_size_count"), value("speaches_whisper_batch_size_sum")


def json_jfk(client: OpenAI) -> Any:
    with JFK.open("rb") as audio:
        return client.audio.transcriptions.create(file=audio, model=TINY_EN).text


def words_jfk(client: OpenAI) -> Any:
    with JFK.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            file=audio, model=TINY_EN, response_format="verbose_json", timestamp_granularities=["word"]
        )
    return verbose.text, [(word.word, word.start, word.end) for word in verbose.words or []]


def text_lamp(client: OpenAI) -> Any:
    with LAMP.open("rb") as audio:
        return client.audio.transcriptions.create(file=audio, model=TINY_EN, response_format="text")


def test_concurrent_clients_get_what_each_gets_alone(batching_server: Server) -> None:
    client = sdk(batching_server)
    jobs: list[Callable[[OpenAI], Any]] = [json_jfk, words_jfk, text_lamp, json_jfk]
    alone = [job(client) for job in jobs]
    assert word_error_rate(JFK_TEXT, alone[0]) <= 0.05
    assert word_error_rate(LAMP_TEXT, alone[2]) <= 0.05
    batches_before, windows_before = batch_counts(batching_server, "generate")
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as workers:
        together = list(workers.map(lambda job: job(client), jobs))
    for reference, result in zip(alone, together, strict=True):
        if isinstance(reference, tuple):  # verbose_json: the text, and each word's times within a frame or two
            assert result[0] == reference[0]
            assert [word for word, *_ in result[1]] == [word for word, *_ in reference[1]]
            for (_, start, end), (_, start_alone, end_alone) in zip(result[1], reference[1], strict=True):
                assert start == pytest.approx(start_alone, abs=0.05)
                assert end == pytest.approx(end_alone, abs=0.05)
        else:
            assert result == reference
    batches, windows = batch_counts(batching_server, "generate")
    assert windows - windows_before > batches - batches_before, "no two requests shared a generate batch"


def test_the_pool_still_refuses_what_it_cannot_queue(batching_server: Server) -> None:
    client = sdk(batching_server)
    json_jfk(client)

    def attempt(_: int) -> str | openai.RateLimitError:
        try:
            return str(json_jfk(client))
        except openai.RateLimitError as error:
            return error

    # 4 run at once and 2 may queue: of 10 sent together, some are refused, and the rest are right.
    with concurrent.futures.ThreadPoolExecutor(10) as workers:
        outcomes = list(workers.map(attempt, range(10)))
    refused = [outcome for outcome in outcomes if isinstance(outcome, openai.RateLimitError)]
    answered = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert refused
    assert len(answered) >= 6
    assert all(word_error_rate(JFK_TEXT, text) <= 0.05 for text in answered)
    for error in refused:
        assert int(error.response.headers["Retry-After"]) >= 1
        assert error.response.json()["error"]["code"] == PoolBusyError(1).code


def test_live_sessions_share_the_model(batching_server: Server) -> None:
    url = live_url(batching_server.url, model=TINY_EN, language="en")
    sessions = [(JFK_TEXT, pcm_of(JFK)), (LAMP_TEXT, pcm_of(LAMP)), (JFK_TEXT, pcm_of(JFK))]

    async def all_sessions() -> list[Any]:
        return await asyncio.gather(*(stream(url, pcm, speed=2.0) for _, pcm in sessions))

    results = asyncio.run(all_sessions())
    for (reference, _), result in zip(sessions, results, strict=True):
        assert result.close_code == 1000, (result.close_code, result.close_reason, result.errors)
        assert result.final_text is not None
        assert word_error_rate(reference, result.final_text) <= 0.1
