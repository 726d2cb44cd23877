"""The OpenAI error shape, the exceptions that carry it, and the handlers that render it.

Every error the server returns, from any endpoint, is
``{"error": {"message": str, "type": str, "param": str | None, "code": str | None}}``.
Domain code raises :class:`ApiError` (or one of its subclasses); nothing else needs to know HTTP.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from speaches.route_match import allowed_methods

logger = logging.getLogger(__name__)

# OpenAI's `type` values, by status.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """An error a client can act on, rendered in OpenAI's error shape."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.param = param
        self.code = code
        self.error_type = error_type or _TYPE_BY_STATUS.get(status_code, "invalid_request_error")
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequestError(ApiError):
    """400: the request is malformed or names an invalid value."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, status_code=400, param=param, code=code)


class NotFoundError(ApiError):
    """404: the named model, voice or resource does not exist."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, status_code=404, param=param, code=code)


class ConflictError(ApiError):
    """409: the resource is in a state that forbids the operation."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, status_code=409, param=param, code=code)


def shorten(value: str, limit: int = 200) -> str:
    """A client-supplied value as it may appear in an error message: a 10 MB id is not echoed back whole."""
    return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"


class ModelNotFoundError(NotFoundError):
    def __init__(self, model_id: str, *, param: str = "model", hint: str = "") -> None:
        # A piper voice is named by `voice`; say so, so the message matches what the client sent.
        what = "voice" if param == "voice" else "model"
        message = f"The {what} '{shorten(model_id)}' does not exist or is not available on this server."
        if hint:
            message = f"{message} {hint}"
        super().__init__(message, param=param, code=f"{what}_not_found")
        self.model_id = model_id


class ModelLoadError(ApiError):
    """500-class failure to load a model whose files exist: corrupt or incompatible files."""

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(
            f"The model '{model_id}' could not be loaded: {reason}",
            status_code=500,
            param="model",
            code="model_load_failed",
            error_type="server_error",
        )
        self.model_id = model_id


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, as documented in the OpenAPI schema."""

    error: ErrorDetail


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


APP_ERROR_RESPONSES = error_responses(401, 413, 500)
"""Statuses any route may answer: the API key and body-size middleware, and unexpected failures."""


def error_body(
    message: str, error_type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable sentence from pydantic's error list, and the offending parameter."""
    errors = exc.errors()
    if not errors:
        return "The request is invalid.", None
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        text = f"Missing required parameter: '{param}'." if param else "A required parameter is missing."
    elif param:
        text = f"Invalid value for '{param}': {message}."
    else:
        text = f"The request is invalid: {message}."
    if len(errors) > 1:
        text += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in the request.)"
    return text, param


async def _api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status_code >= 500:
        logger.error("request failed: %s", exc.message)
    return error_response(exc)


async def _validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = _describe_validation_error(exc)
    return error_response(InvalidRequestError(message, param=param))


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
