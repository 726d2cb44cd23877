"""ASGI middleware shared by every route."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from speaches import metrics
from speaches.auth import api_key_matches, bearer_token, subprotocol_key
from speaches.config import Settings
from speaches.errors import error_body
from speaches.request_id import REQUEST_ID_HEADER, current_request_id, request_id_from
from speaches.web.limits import BodySizeLimitMiddleware, SendTimeoutMiddleware
from speaches.web.route_match import route_template

logger = logging.getLogger(__name__)


class ApiKeyMiddleware:
    """With API_KEY set, refuse every request without `Authorization: Bearer <key>` with 401.

    The check runs before the app sees the request, so a refused request reads no body, loads no
    model and starts no job. WebSocket handshakes are refused the same way (an HTTP 401 instead of
    the upgrade); they may present the key as `?api_key=` because browsers cannot set headers on a
    WebSocket. Health probes, the API docs and the playground page (which holds no data; each of its
    calls sends the key typed into it) stay open.
    """

    OPEN_PATHS = frozenset(
        {"/health", "/health/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/"}
    )
    OPEN_PREFIXES = ("/ui/",)

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or self.settings.api_key is None
            or scope["path"] in self.OPEN_PATHS
            or scope["path"].startswith(self.OPEN_PREFIXES)
            or api_key_matches(self.settings, self._presented_key(scope))
        ):
            await self.app(scope, receive, send)
            return
        presented = self._presented_key(scope) is not None
        message = (
            "Incorrect API key provided."
            if presented
            else "You didn't provide an API key. Send it in the Authorization header: `Authorization: Bearer <key>`."
        )
        response = JSONResponse(
            error_body(message, "invalid_request_error", None, "invalid_api_key"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        if scope["type"] == "websocket":
            await self._deny_websocket(scope, receive, send, response)
        else:
            await response(scope, receive, send)

    @staticmethod
    def _presented_key(scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        token = bearer_token(headers)
        if token is None and scope["type"] == "websocket":
            token = QueryParams(scope.get("query_string", b"")).get("api_key") or subprotocol_key(headers)
        return token

    @staticmethod
    async def _deny_websocket(scope: Scope, receive: Receive, send: Send, response: JSONResponse) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            await response(scope, receive, send)
        else:
            # A server without the denial-response extension: closing before accept answers 403.
            await send({"type": "websocket.close", "code": 1008, "reason": "invalid API key"})


class CancelOnDisconnectMiddleware:
    """Stop a request's work when its client goes away, for every HTTP route.

    Uvicorn reports a disconnect only through `receive()`, which a handler stops calling once it has
    the body, so a non-streamed transcription would run to its end for nobody. Once the body is in,
    this keeps listening and cancels the handler if the client disconnects before the response is
    complete; the inference pool then stops the job after its current step. Work after a complete
    response (background tasks, closing uploads) is never cancelled.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = asyncio.current_task()
        assert handler is not None
        body_received = asyncio.Event()
        disconnected = asyncio.Event()
        response_complete = False
        cancelled_here = False

        async def app_receive() -> Message:
            if body_received.is_set():
                # The listener owns the real receive now; the app only ever learns of the disconnect.
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_received.set()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                response_complete = True
            await send(message)

        async def listen_for_disconnect() -> None:
            nonlocal cancelled_here
            await body_received.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()
            if not response_complete:
                cancelled_here = True
                handler.cancel()

        listener = asyncio.create_task(listen_for_disconnect())
        try:
            await self.app(scope, app_receive, tracking_send)
        except asyncio.CancelledError:
            # Only our own cancellation ends quietly; a server shutdown's propagates.
            if not cancelled_here or handler.uncancel() > 0:
                raise
            logger.info("client disconnected; stopped its request")
        finally:
            listener.cancel()


class RequestIdMiddleware:
    """Give each request and WebSocket session an id: in every log line, and in `X-Request-Id`.

    A sane incoming `X-Request-Id` (from a proxy or the client) is kept so logs can be joined across
    services. An exception that escapes the app still gets its 500 here, carrying the id, so the
    client can quote it; the outer error middleware then logs it (with the id).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope).get(REQUEST_ID_HEADER))
        # Set, not reset afterwards: each request runs in its own task (its own context), and the
        # outer error middleware logs an escaped exception after we return.
        current_request_id.set(request_id)
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] in ("http.response.start", "websocket.http.response.start", "websocket.accept"):
                response_started = True
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if scope["type"] == "http" and not response_started:
                await _internal_error_response(scope, receive, send_with_id)
            raise


class MetricsMiddleware:
    """Count requests by method, route template and status, and time them (to the end of the body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = "WEBSOCKET" if scope["type"] == "websocket" else scope["method"]
        started = time.perf_counter()
        # 499 (nginx's "client closed request") unless a response starts; an escaping exception is 500.
        status = 499
        in_progress = metrics.HTTP_REQUESTS_IN_PROGRESS.labels(metrics.method_label(method))
        in_progress.inc()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            status = 500
            raise
        finally:
            in_progress.dec()
            elapsed = time.perf_counter() - started
            metrics.record_http_request(method, _route_template(scope), status, elapsed)
            # raw_path is percent-encoded, so a client cannot forge log lines through the path.
            path = scope.get("raw_path", b"").decode("ascii", "backslashreplace") or scope["path"]
            logger.info("%s %s -> %d in %.3f s", method, path, status, elapsed)


def _route_template(scope: Scope) -> str:
    """The matched route's template; for requests answered before routing (401, 413, CORS preflight), the
    route they would have reached."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None and "app" in scope:
        template = route_template(scope["app"], scope)
    return template or metrics.UNMATCHED_ROUTE


async def _internal_error_response(scope: Scope, receive: Receive, send: Send) -> None:
    body = error_body("The server hit an internal error. It has been logged.", "server_error")
    await JSONResponse(body, status_code=500)(scope, receive, send)


def install_middleware(app: Starlette, settings: Settings) -> None:
    """Every request passes, outermost first: request id, metrics, CORS, API key, disconnect watch, body limits,
    send timeout.

    CORS sits outside the key check so a browser's preflight (which never carries credentials) is
    answered, and so a 401 carries the CORS headers the browser needs to show it.
    """
    # add_middleware wraps what was added before: add innermost first.
    app.add_middleware(SendTimeoutMiddleware, timeout_seconds=settings.send_timeout_seconds)
    app.add_middleware(BodySizeLimitMiddleware, settings=settings)
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(ApiKeyMiddleware, settings=settings)
    if settings.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allow_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
