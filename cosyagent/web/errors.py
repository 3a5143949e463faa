"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Routes raise :class:`ApiError` (or let a library's own error through: the handlers here
translate them); FastAPI's request validation and routing errors on ``/v1`` paths get the
same shape. Other paths keep FastAPI's defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cosyagent.voices.library import (
    VoiceLibraryError,
    VoiceNameTakenError,
    VoiceNotFoundError,
)

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

_STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class ApiError(StarletteHTTPException):
    """An error to answer with. An HTTPException, so FastAPI lets it through body parsing unchanged."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=dict(headers) if headers else None)
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or (SERVER_ERROR if status >= 500 else INVALID_REQUEST)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.message, error.kind, error.param, error.code),
        status_code=error.status_code,
        headers=error.headers,
    )


def voice_error(exc: VoiceLibraryError, param: str | None = None) -> ApiError:
    """A voice library refusal as an API error (a path id that is not found is a 404)."""
    status = 400
    if isinstance(exc, VoiceNotFoundError) and exc.param == "voice_id":
        status = 404
    elif isinstance(exc, VoiceNameTakenError):
        status = 409
    return ApiError(status, str(exc), param=param or exc.param, code=exc.code)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_voice_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, VoiceLibraryError)
        return error_response(voice_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not _is_api(request):
            return await http_exception_handler(request, exc)
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        error = ApiError(exc.status_code, message, code=code, headers=exc.headers)
        return error_response(error)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not _is_api(request):
            return await request_validation_exception_handler(request, exc)
        return error_response(_from_validation(exc))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(VoiceLibraryError, on_voice_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


def _is_api(request: Request) -> bool:
    return request.url.path == "/v1" or request.url.path.startswith("/v1/")


def _from_validation(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first: Mapping[str, Any] = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "form")]
    param = ".".join(location) or None
    kind = str(first.get("type", ""))
    if kind == "missing":
        message, code = f"missing required parameter: {param!r}", "missing_required_parameter"
    elif kind == "json_invalid":
        message, code, param = "the request body is not valid JSON", "invalid_json", None
    else:
        message, code = f"invalid value for {param!r}: {first.get('msg', 'invalid')}", "invalid_value"
    return ApiError(400, message, param=param, code=code)
