from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.chat.llm_stand_in import StandInLlm
from tests.helpers import TINY_EN, Server, running_server

LLM_KEY = "stand-in-secret"


@pytest.fixture(scope="session")
def llm() -> Iterator[StandInLlm]:
    with StandInLlm() as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def voice_server(llm: StandInLlm) -> Iterator[Server]:
    """A server whose chat completions think with the stand-in LLM and hear with tiny.en."""
    env = {
        "CHAT_COMPLETION_BASE_URL": llm.base_url,
        "CHAT_COMPLETION_API_KEY": LLM_KEY,
        "CHAT_COMPLETION_TRANSCRIPTION_MODEL": TINY_EN,
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
    }
    with running_server(env) as running:
        yield running
        assert running.alive(), f"the voice server died during the tests:\n{running.logs()}"


@pytest.fixture(scope="session")
def voice_client(voice_server: Server) -> OpenAI:
    return OpenAI(base_url=f"{voice_server.url}/v1", api_key="not-needed", max_retries=0, timeout=300)
