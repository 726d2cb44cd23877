"""The LLM: an OpenAI-compatible chat server (llama.cpp, vLLM, Ollama, ...) at CHAT_COMPLETION_BASE_URL.

Requests go out as JSON over one pooled `httpx.AsyncClient` rather than through the `openai` SDK:
the body must reach the LLM exactly as the client wrote it (fields the SDK does not know included),
its errors must come back with their own status and body, and cancelling the awaiting task must
close the connection at once so the LLM stops generating. Raw HTTP does all three plainly.

Everything the LLM sends is read with bounds: a non-streamed answer up to `MAX_ANSWER_BYTES`, a
streamed one event by event, no event over `MAX_EVENT_BYTES`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from speaches.config import Settings
from speaches.errors import ApiError

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_EVENT_BYTES = 4 * 1024 * 1024
_MAX_ERROR_BYTES = 64 * 1024
CONNECT_TIMEOUT_SECONDS = 10.0


class LlmNotConfiguredError(ApiError):
    def __init__(self) -> None:
        super().__init__(
            "Chat completions need an LLM and none is configured: set CHAT_COMPLETION_BASE_URL to an "
            "OpenAI-compatible chat server, e.g. http://localhost:11434/v1 (Ollama) or http://localhost:8080/v1 "
            "(llama.cpp's llama-server), and CHAT_COMPLETION_API_KEY if that server wants a key.",
            status_code=503,
            code="chat_completion_not_configured",
            error_type="server_error",
            # The openai SDK retries 5xx answers; retrying cannot help until the operator acts.
            headers={"x-should-retry": "false"},
        )


class LlmUnreachableError(ApiError):
    def __init__(self, where: str, reason: str, *, status_code: int = 502) -> None:
        super().__init__(
            f"The LLM at {where} (CHAT_COMPLETION_BASE_URL) could not be reached: {reason}",
            status_code=status_code,
            code="llm_unreachable",
            error_type="server_error",
        )


class LlmProtocolError(ApiError):
    """The LLM answered, but not as an OpenAI-compatible server does."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(
            f"The LLM at {where} (CHAT_COMPLETION_BASE_URL) {problem}",
            status_code=502,
            code="llm_bad_response",
            error_type="server_error",
        )


class LlmClient:
    """POSTs chat completions to CHAT_COMPLETION_BASE_URL. One per server; `aclose()` at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: httpx.AsyncClient | None = None

    @property
    def where(self) -> str:
        """The base URL as it may appear in messages and logs: without any user or password in it."""
        base_url = self.settings.chat_completion_base_url
        if base_url is None:
            return "(not configured)"
        return str(httpx.URL(base_url).copy_with(username=None, password=None))

    def _http(self) -> httpx.AsyncClient:
        if self.settings.chat_completion_base_url is None:
            raise LlmNotConfiguredError()
        if self._client is None:  # made on first use: a server without an LLM never builds a TLS context
            key = self.settings.chat_completion_api_key
            self._client = httpx.AsyncClient(
                base_url=self.settings.chat_completion_base_url + "/",
                headers={"Authorization": f"Bearer {key.get_secret_value()}"} if key else {},
                timeout=httpx.Timeout(self.settings.chat_completion_timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS),
                follow_redirects=False,
            )
        return self._client

    def check_configured(self) -> None:
        """Raise the 503 that says what to set, before any audio is transcribed for nothing."""
        self._http()

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed chat completion: the LLM's answer as a dict."""
        async with self._exchange({**body, "stream": False}) as response:
            content = await _read_bounded(response, MAX_ANSWER_BYTES)
        if content is None:
            raise LlmProtocolError(self.where, f"sent an answer larger than {MAX_ANSWER_BYTES // 2**20} MiB.")
        try:
            answer = json.loads(content)
        except ValueError:
            raise LlmProtocolError(self.where, "answered with something that is not JSON.") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise LlmProtocolError(self.where, "answered without a list of 'choices'.")
        return answer

    @contextlib.asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """A streamed chat completion: opens it (raising the LLM's error if it refuses), then yields its chunks.

        Leaving the context closes the connection, which is how the LLM learns to stop.
        """
        async with self._exchange({**body, "stream": True}) as response:
            yield self._chunks(response)

    @contextlib.asynccontextmanager
    async def _exchange(self, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        http = self._http()
        try:
            async with http.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    raise await self._error_from(response)
                if not 200 <= response.status_code < 300:
                    raise LlmProtocolError(self.where, f"answered HTTP {response.status_code} to a chat completion.")
                yield response
        except httpx.TimeoutException as error:
            raise LlmUnreachableError(
                self.where,
                f"no answer within {self.settings.chat_completion_timeout_seconds:g} s "
                f"(CHAT_COMPLETION_TIMEOUT_SECONDS) ({type(error).__name__}).",
                status_code=504,
            ) from None
        except httpx.TransportError as error:
            raise LlmUnreachableError(self.where, f"{type(error).__name__}: {error or 'connection failed'}.") from None

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        async for data in _sse_data(response, MAX_EVENT_BYTES, self.where):
            if data.strip() == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise LlmProtocolError(self.where, "sent a stream event that is not JSON.") from None
            if not isinstance(chunk, dict):
                raise LlmProtocolError(self.where, "sent a stream event that is not a JSON object.")
            yield chunk

    async def _error_from(self, response: httpx.Response) -> ApiError:
        """The LLM's error, in OpenAI's shape with the LLM's own status; its message passes through."""
        raw = await _read_bounded(response, _MAX_ERROR_BYTES)
        text = (raw or b"").decode("utf-8", "replace").strip()
        message, error_type, param, code = _parse_error(text)
        message = message or f"HTTP {response.status_code} {response.reason_phrase}".strip()
        status = response.status_code
        logger.warning("the LLM at %s answered %d: %s", self.where, status, message)
        if status in (401, 403):
            # Passed through, it would tell the client its own key is wrong; it is this server's.
            return ApiError(
                f"The LLM at {self.where} refused this server's credentials (CHAT_COMPLETION_API_KEY): {message}",
                status_code=502,
                code="llm_authentication_failed",
                error_type="server_error",
            )
        retry_after = response.headers.get("retry-after")
        return ApiError(
            message,
            status_code=status,
            param=param,
            code=code,
            error_type=error_type,
            headers={"Retry-After": retry_after} if retry_after else None,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _parse_error(text: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, type, param, code) from an error body: OpenAI's shape, `{"error": "..."}`, `{"detail": ...}`."""
    try:
        body = json.loads(text)
    except ValueError:
        return (text[:2000] or None), None, None, None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):

        def field(name: str) -> str | None:
            value = error.get(name)
            return None if value is None else str(value)

        return field("message"), field("type"), field("param"), field("code")
    if isinstance(error, str):
        return error, None, None, None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return (detail if isinstance(detail, str) else json.dumps(detail)[:2000]), None, None, None
    return text[:2000], None, None, None


async def _read_bounded(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None if it is longer than `limit` bytes (reading stops there)."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    return b"".join(parts)


async def _sse_data(response: httpx.Response, limit: int, where: str) -> AsyncIterator[str]:
    """The `data` of each server-sent event, read with no event larger than `limit` bytes."""
    buffer = b""
    data: list[bytes] = []
    try:
        async for part in response.aiter_bytes():
            buffer += part
            while (newline := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:newline].rstrip(b"\r"), buffer[newline + 1 :]
                if not line:
                    if data:
                        yield b"\n".join(data).decode("utf-8", "replace")
                        data = []
                elif line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
                # `event:`, `id:`, `retry:` and `:` comments carry nothing a chat completion needs.
            if len(buffer) + sum(map(len, data)) > limit:
                raise LlmProtocolError(where, f"sent a stream event larger than {limit // 2**20} MiB.")
    except httpx.TimeoutException:
        stalled = "the stream stalled (CHAT_COMPLETION_TIMEOUT_SECONDS)."
        raise LlmUnreachableError(where, stalled, status_code=504) from None
    except httpx.TransportError as error:
        raise LlmUnreachableError(where, f"the stream broke off ({type(error).__name__}: {error}).") from None
    if buffer.startswith(b"data:"):
        data.append(buffer[5:].rstrip(b"\r").removeprefix(b" "))
    if data:
        yield b"\n".join(data).decode("utf-8", "replace")
