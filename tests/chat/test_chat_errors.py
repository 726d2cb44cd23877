"""Chat completion errors through the openai SDK: no LLM configured, an LLM that refuses, fails, breaks off
or cannot be reached, and requests this server refuses itself. Each in OpenAI's error shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.chat.audio_checks import b64
from tests.chat.llm_stand_in import StandInLlm
from tests.helpers import Server, free_port, running_server

pytestmark = pytest.mark.server

HELLO: list[Any] = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def unconfigured() -> Iterator[Server]:
    with running_server() as server:
        yield server


@pytest.fixture(scope="module")
def unreachable() -> Iterator[Server]:
    # Nothing listens on a fresh free port.
    with running_server({"CHAT_COMPLETION_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}) as server:
        yield server


def sdk(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


def test_without_an_llm_the_error_says_what_to_set(unconfigured: Server) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        sdk(unconfigured).chat.completions.create(model="m", messages=HELLO)
    assert failed.value.status_code == 503
    assert "CHAT_COMPLETION_BASE_URL" in failed.value.message
    assert failed.value.code == "chat_completion_not_configured"
    # ... and tells the SDK not to retry what only the operator can fix.
    assert failed.value.response.headers["x-should-retry"] == "false"
    calls = []
    retrying = OpenAI(base_url=f"{unconfigured.url}/v1", api_key="x", max_retries=2, timeout=60)
    retrying._client.event_hooks["request"].append(calls.append)
    with pytest.raises(openai.InternalServerError):
        retrying.chat.completions.create(model="m", messages=HELLO)
    assert len(calls) == 1


def test_an_unreachable_llm_is_a_502_that_says_so(unreachable: Server) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        sdk(unreachable).chat.completions.create(model="m", messages=HELLO, stream=True)
    assert failed.value.status_code == 502
    assert "could not be reached" in failed.value.message
    assert "CHAT_COMPLETION_BASE_URL" in failed.value.message
    assert failed.value.code == "llm_unreachable"


@pytest.mark.parametrize(
    ("status", "error_class", "param", "code"),
    [
        (400, openai.BadRequestError, "temperature", None),
        (404, openai.NotFoundError, "model", "model_not_found"),
        (429, openai.RateLimitError, None, "rate_limited"),
        (500, openai.InternalServerError, None, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_the_llms_errors_pass_through(
    voice_client: OpenAI,
    status: int,
    error_class: type[openai.APIStatusError],
    param: str | None,
    code: str | None,
    stream: bool,
) -> None:
    with pytest.raises(error_class) as failed:
        voice_client.chat.completions.create(model=f"error-{status}", messages=HELLO, stream=stream)
    assert failed.value.status_code == status
    body = failed.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert body["code"] == code
    assert body["message"] != ""
    if status == 429:
        assert failed.value.response.headers["retry-after"] == "7"


def test_the_llm_refusing_this_servers_key_is_not_the_clients_401(voice_client: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        voice_client.chat.completions.create(model="error-401", messages=HELLO)
    assert failed.value.status_code == 502
    assert "CHAT_COMPLETION_API_KEY" in failed.value.message


def test_an_error_event_mid_stream_reaches_the_sdk(voice_client: OpenAI) -> None:
    stream = voice_client.chat.completions.create(
        model="midstream-error",
        messages=HELLO,
        stream=True,
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"},
    )
    with pytest.raises(openai.APIError) as failed:
        for _chunk in stream:
            pass
    assert "crashed mid-answer" in failed.value.message


def test_a_stream_that_breaks_off_ends_with_a_502_event(voice_client: OpenAI, llm: StandInLlm) -> None:
    stream = voice_client.chat.completions.create(model="drop", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError) as failed:
        for _chunk in stream:
            pass
    assert "broke off" in failed.value.message


@pytest.mark.parametrize(
    ("request_fields", "param", "says"),
    [
        ({"modalities": ["text", "audio"]}, "audio", "'audio' is required"),
        (
            {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}, "stream": True},
            "audio.format",
            "pcm16",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0].input_audio.data",
            "base64",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "input_audio",
                                "input_audio": {"data": b64(b"plain text, not audio"), "format": "wav"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].input_audio.data",
            "messages[0].content[0].input_audio",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"format": "wav"}}]}]},
            "messages[0].content[0].input_audio.data",
            "base64 audio",
        ),
        ({"messages": [{"content": "no role"}]}, "messages.0.role", "role"),
        ({"messages": []}, "messages", "messages"),
    ],
)
def test_requests_this_server_refuses(
    voice_client: OpenAI, request_fields: dict[str, Any], param: str, says: str
) -> None:
    fields: dict[str, Any] = {"model": "m", "messages": HELLO, **request_fields}
    with pytest.raises(openai.BadRequestError) as refused:
        voice_client.chat.completions.create(**fields)
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert says in body["message"]


def test_an_unknown_voice_is_a_404_before_the_llm_is_asked(voice_client: OpenAI, llm: StandInLlm) -> None:
    asked = len(llm.exchanges)
    with pytest.raises(openai.NotFoundError) as failed:
        voice_client.chat.completions.create(
            model="m",
            messages=HELLO,
            modalities=["text", "audio"],
            audio={"voice": "xx_XX-nobody-medium", "format": "wav"},
        )
    assert failed.value.body["param"] == "voice"  # type: ignore[index]
    assert len(llm.exchanges) == asked


def test_errors_have_openais_shape_over_raw_http(voice_server: Server) -> None:
    answer = httpx.post(f"{voice_server.url}/v1/chat/completions", json={"model": "error-404", "messages": HELLO})
    assert answer.status_code == 404
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
