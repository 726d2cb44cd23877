"""How errors are rendered over HTTP: the exception handlers, and the OpenAPI entries that document them."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from speaches.errors import ApiError, ErrorResponse, InvalidRequestError
from speaches.web.route_match import allowed_methods

logger = logging.getLogger(__name__)

_RESPONSE_DESCRIPTIONS = {
    400: "The request is malformed or names an invalid value.",
    401: "API_KEY is set and the request has no valid `Authorization: Bearer <key>`.",
    404: "The named model, voice or resource does not exist.",
    409: "The resource is in a state that forbids the operation.",
    413: "The request body is larger than MAX_UPLOAD_BYTES.",
    429: "The inference queue is full; retry after `Retry-After` seconds.",
    500: "The server failed (e.g. a model's files could not be loaded).",
    503: "The server is not ready.",
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting these statuses with the error shape.

    Every app route already documents 401, 413 and 500 (the middleware and error handlers can answer
    them anywhere); a router adds what its routes can raise, e.g.
    ``@router.post(..., responses=error_responses(400, 404, 429))``.
    """
    return {
        status: {"model": ErrorResponse, "description": _RESPONSE_DESCRIPTIONS.get(status, HTTPStatus(status).phrase)}
        for status in status_codes
    }


APP_ERROR_RESPONSES = error_responses(401, 413, 429, 500)
"""Statuses any route may answer: the API key and body-size middleware (429: too many uploads held), and unexpected
failures."""


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None, str | None]:
    """One readable sentence from pydantic's error list, the offending parameter and an error code."""
    errors = exc.errors()
    if not errors:
        return "The request is invalid.", None, None
    # A field the server does not know is the likeliest cause of the rest: name it first.
    errors = sorted(errors, key=lambda error: error.get("type") != "extra_forbidden")
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    # `include[]` or `include[].0` is the parameter `include` to a client; an index inside the
    # location (`messages.0.role`) says which item, so it stays.
    if location and location[-1].isdigit():
        location = location[:-1]
    param = ".".join(location).replace("[]", "") or None
    message = str(first.get("msg", "invalid value"))
    code = None
    if first.get("type") == "missing":
        text = f"Missing required parameter: '{param}'." if param else "A required parameter is missing."
    elif first.get("type") == "extra_forbidden":
        # As OpenAI answers a field it does not define: refused, never silently ignored.
        text = f"Unrecognized request argument supplied: '{param}'. See /docs for the parameters this endpoint takes."
        code = "unknown_parameter"
    elif param:
        text = f"Invalid value for '{param}': {message}."
    else:
        text = f"The request is invalid: {message}."
    if len(errors) > 1:
        text += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in the request.)"
    return text, param, code


async def _api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status_code >= 500:
        logger.error("request failed: %s", exc.message)
    return error_response(exc)


async def _validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param, code = _describe_validation_error(exc)
    return error_response(InvalidRequestError(message, param=param, code=code))


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    headers = exc.headers
    if status == 404 and detail == "Not Found":
        detail = "No such route. See /docs for the API."
    elif status == 405:
        detail = "Method not allowed on this route. See /docs for the API."
        # Starlette names only the first matching route's methods; a path may be several routes.
        allowed = allowed_methods(request.app, request.scope)
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return error_response(ApiError(detail, status_code=status, headers=headers))


async def _unhandled_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(
        ApiError(
            "The server hit an internal error. It has been logged.",
            status_code=500,
            error_type="server_error",
        )
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
