"""The OpenAI error shape and the exceptions that carry it; no web framework here.

Every error the server returns, from any endpoint, is
``{"error": {"message": str, "type": str, "param": str | None, "code": str | None}}``.
Domain code raises :class:`ApiError` (or one of its subclasses) with the HTTP status it stands for;
`speaches.web.errors` renders it for HTTP, the live and Realtime sockets send it as a message.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# OpenAI's `type` values, by status, as its API sends them: a missing or wrong key and an unknown model
# are `invalid_request_error` (codes `invalid_api_key`, `model_not_found`), a 429 `rate_limit_exceeded`.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
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


def error_body(
    message: str, error_type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
