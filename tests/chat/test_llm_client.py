"""The LLM client in-process, against small ASGI servers that answer the way real LLM servers do (or don't)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from speaches.chat import llm as llm_module
from speaches.chat.llm import LlmClient, LlmNotConfiguredError
from speaches.config import Settings
from speaches.errors import ApiError


def client_for(answer: Callable[[Request], Any], **settings: Any) -> LlmClient:
    async def endpoint(request: Request) -> Response:
        return await answer(request)

    app = Starlette(routes=[Route("/v1/chat/completions", endpoint, methods=["POST"])])
    client = LlmClient(Settings(chat_completion_base_url="http://llm.test/v1", **settings))
    client._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://llm.test/v1/")
    return client


def streaming(*pieces: bytes) -> Callable[[Request], Any]:
    async def answer(_request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        return StreamingResponse(body(), media_type="text/event-stream")

    return answer


async def collect(client: LlmClient) -> list[dict[str, Any]]:
    async with client.stream({"model": "m", "messages": []}) as chunks:
        return [chunk async for chunk in chunks]


async def test_events_are_read_however_the_bytes_are_cut() -> None:
    stream = (
        b': keep-alive\r\n\r\ndata: {"a": 1}\r\n\r\n'
        b'event: x\ndata: {"b":\ndata: 2}\n\n'
        b'data: [DONE]\n\ndata: {"after": 1}\n\n'
    )
    for size in (1, 5, len(stream)):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert await collect(client_for(streaming(*pieces))) == [{"a": 1}, {"b": 2}]


async def test_a_stream_without_done_ends_with_its_last_event() -> None:
    assert await collect(client_for(streaming(b'data: {"a": 1}\n\ndata: {"b": 2}'))) == [{"a": 1}, {"b": 2}]


async def test_an_event_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_module, "MAX_EVENT_BYTES", 1000)
    with pytest.raises(ApiError) as refused:
        await collect(client_for(streaming(b"data: " + b"x" * 600, b"y" * 600)))
    assert refused.value.status_code == 502
    assert refused.value.code == "llm_bad_response"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (JSONResponse({"error": "model 'llama9' not found"}, status_code=404), "model 'llama9' not found"),
        (JSONResponse({"detail": "Not Found"}, status_code=404), "Not Found"),
        (PlainTextResponse("upstream overloaded", status_code=503), "upstream overloaded"),
        (Response(status_code=500), "HTTP 500 Internal Server Error"),
    ],
)
async def test_error_bodies_of_every_shape_become_openais(response: Response, message: str) -> None:
    async def answer(_request: Request) -> Response:
        return response

    with pytest.raises(ApiError) as failed:
        await client_for(answer).complete({"model": "m", "messages": []})
    assert failed.value.status_code == response.status_code
    assert failed.value.message == message


async def test_answers_that_are_not_chat_completions_are_502() -> None:
    async def not_json(_request: Request) -> Response:
        return PlainTextResponse("<html>proxy page</html>")

    async def no_choices(_request: Request) -> Response:
        return JSONResponse({"object": "list"})

    for answer in (not_json, no_choices):
        with pytest.raises(ApiError) as failed:
            await client_for(answer).complete({"model": "m", "messages": []})
        assert failed.value.status_code == 502


async def test_the_body_goes_as_given_with_this_servers_key() -> None:
    seen: dict[str, Any] = {}

    async def answer(request: Request) -> Response:
        seen.update(await request.json())
        return JSONResponse({"choices": []})

    await client_for(answer).complete({"model": "m", "messages": [], "odd_field": [1, 2]})
    assert seen == {"model": "m", "messages": [], "odd_field": [1, 2], "stream": False}
    keyed = LlmClient(Settings(chat_completion_base_url="http://llm.test/v1", chat_completion_api_key="k-123"))
    assert keyed._http().headers["authorization"] == "Bearer k-123"
    await keyed.aclose()
    assert "authorization" not in LlmClient(Settings(chat_completion_base_url="http://llm.test/v1"))._http().headers


def test_unconfigured_and_credentials_kept_out_of_messages() -> None:
    with pytest.raises(LlmNotConfiguredError):
        LlmClient(Settings()).check_configured()
    client = LlmClient(Settings(chat_completion_base_url="https://user:secret@llm.example/v1/"))
    assert client.where == "https://llm.example/v1"
    with pytest.raises(ValueError, match="http"):
        Settings(chat_completion_base_url="llm.example/v1")
