"""A stand-in OpenAI-compatible LLM server on a free port, for the voice conversation tests and bench.

It answers `POST /v1/chat/completions` deterministically, streamed or not, and records every request
it got (its body, whether it finished, whether its client left first). The `model` name picks the
behaviour:

- any name: a three-sentence answer that repeats the last user message (`answer_for`); with `tools`
  and a user message last, a call of the first tool instead; after a `tool` message, a sentence that
  quotes the tool's output.
- `slow`: 60 sentences, one word every 0.1 s when streamed; non-streamed, 30 s of thinking. For
  testing that a client who leaves stops the request (the record says `cancelled`).
- `paced`: three sentences with 1.5 s between them when streamed (`sentence_sent_at` records when).
- `error-<status>`: that status with an OpenAI-shaped error body (`Retry-After: 7` on 429).
- `midstream-error`: one sentence, then an error event. `drop`: one sentence, then the connection dies.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.helpers import free_port

SLOW_SENTENCES = 60


@dataclass
class Exchange:
    body: dict[str, Any]
    authorization: str | None
    started_at: float = field(default_factory=time.monotonic)
    finished: bool = False
    cancelled: bool = False
    sentence_sent_at: list[float] = field(default_factory=list)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def answer_for(messages: list[dict[str, Any]]) -> str:
    last = messages[-1]
    if last.get("role") == "tool":
        return f"The tool says {message_text(last)}. That is all I know."
    heard = message_text(last).strip().rstrip(".!?") or "nothing"
    return f"You said: {heard}. Here is a second sentence. And this is the third one."


def sentences_of(text: str) -> list[str]:
    """The answer's sentences, each with the space that follows it, as a streamed LLM would write them."""
    parts = text.split(". ")
    return [f"{part}. " for part in parts[:-1]] + [parts[-1]]


class StandInLlm:
    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name="stand-in LLM", daemon=True)

    def start(self) -> StandInLlm:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in LLM did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> StandInLlm:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def last(self, model: str | None = None) -> Exchange:
        with self._lock:
            matching = [exchange for exchange in self.exchanges if model is None or exchange.body["model"] == model]
        assert matching, f"the stand-in LLM got no request for {model!r}"
        return matching[-1]

    def wait_until(self, predicate: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "the stand-in LLM never saw what the test waited for"
            time.sleep(0.05)

    # --- the server side ---

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        exchange = Exchange(body=body, authorization=request.headers.get("authorization"))
        with self._lock:
            self.exchanges.append(exchange)
        model = str(body.get("model", ""))
        if refusal := _refusal(body):
            exchange.finished = True
            return refusal
        if model.startswith("error-"):
            exchange.finished = True
            status = model.removeprefix("error-")
            return _error(int(status) if status.isdigit() and 400 <= int(status) <= 599 else 500)
        if body.get("stream"):
            return StreamingResponse(self._stream(exchange, request), media_type="text/event-stream")
        if model == "slow":
            for _ in range(300):
                if await request.is_disconnected():
                    exchange.cancelled = True
                    return Response(status_code=499)
                await asyncio.sleep(0.1)
        exchange.finished = True
        return JSONResponse(_completion(body))

    async def _stream(self, exchange: Exchange, request: Request) -> Any:
        body = exchange.body
        model = str(body["model"])
        frame = {"id": "chatcmpl-stand-in", "object": "chat.completion.chunk", "created": 1, "model": model}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return f"data: {json.dumps({**frame, 'choices': [choice]})}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            call = _tool_call(body)
            if call is not None:
                yield chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                arguments = call["function"]["arguments"]
                for start in range(0, len(arguments), 8):
                    yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start : start + 8]}}]})
                yield chunk({}, "tool_calls")
            else:
                if model == "slow":
                    text = " ".join(f"This is slow sentence number {n}." for n in range(SLOW_SENTENCES))
                else:
                    text = answer_for(body["messages"])
                for number, sentence in enumerate(sentences_of(text)):
                    if model == "paced" and number:
                        await asyncio.sleep(1.5)
                    for word in sentence.split(" "):
                        if model == "slow":
                            await asyncio.sleep(0.1)
                        yield chunk({"content": f"{word} " if word else ""})
                    exchange.sentence_sent_at.append(time.monotonic())
                    if model == "midstream-error":
                        error = {
                            "error": {
                                "message": "The model crashed mid-answer.",
                                "type": "server_error",
                                "param": None,
                                "code": "model_crashed",
                            }
                        }
                        yield f"data: {json.dumps(error)}\n\n"
                        exchange.finished = True
                        return
                    if model == "drop":
                        raise ConnectionAbortedError("the stand-in drops the connection")
                yield chunk({}, "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
                yield f"data: {json.dumps({**frame, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
            exchange.finished = True
        finally:
            if not exchange.finished:
                exchange.cancelled = True


def _refusal(body: dict[str, Any]) -> JSONResponse | None:
    """A 400 for what a real LLM server would refuse too, so fuzzed requests get an answer, not a crash."""
    messages = body.get("messages")
    tools = body.get("tools")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        problem = "'messages' must be a non-empty list of objects."
    elif tools is not None and not (
        isinstance(tools, list)
        and all(
            isinstance(tool, dict)
            and isinstance(tool.get("function"), dict)
            and isinstance(tool["function"].get("name"), str)
            for tool in tools
        )
    ):
        problem = "'tools' must be a list of functions with names."
    else:
        return None
    return JSONResponse(
        {"error": {"message": problem, "type": "invalid_request_error", "param": None, "code": None}}, 400
    )


def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not tools or body["messages"][-1].get("role") != "user":
        return None
    arguments = json.dumps({"question": message_text(body["messages"][-1]).strip()})
    return {
        "id": "call_stand_in_1",
        "type": "function",
        "function": {"name": tools[0]["function"]["name"], "arguments": arguments},
    }


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    call = _tool_call(body)
    if call is not None:
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish_reason = "tool_calls"
    else:
        message = {"role": "assistant", "content": answer_for(body["messages"])}
        finish_reason = "stop"
    return {
        "id": "chatcmpl-stand-in",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }


def _error(status: int) -> JSONResponse:
    messages = {
        400: ("'temperature' must be at most 2.", "invalid_request_error", "temperature", None),
        404: ("The model 'error-404' does not exist.", "invalid_request_error", "model", "model_not_found"),
        429: ("Too many requests; slow down.", "rate_limit_error", None, "rate_limited"),
        401: ("Invalid API key.", "authentication_error", None, "invalid_api_key"),
    }
    message, error_type, param, code = messages.get(
        status, (f"The stand-in failed with {status}.", "server_error", None, None)
    )
    headers = {"Retry-After": "7"} if status == 429 else None
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
