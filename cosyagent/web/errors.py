"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Routes raise the domain's own errors (engines, voice library, audio decoding) and
:class:`ApiError` for what only the request's validation knows; :data:`DOMAIN_ERRORS` is the
one table that gives each domain error its status and code: the client's fault is a 400
(404, 409 where more precise), ours a 500, an engine that cannot serve a 503. FastAPI's
request validation and routing errors on ``/v1`` paths get the same shape; other paths keep
FastAPI's defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cosyagent.audio.containers import AudioCodecError, AudioDecodeError, AudioTooLongError
from cosyagent.engines.base import EngineError, EngineUnavailableError, UnspeakableTextError, UnsupportedLanguageError
from cosyagent.voices.library import VoiceIdNotFoundError, VoiceLibraryError, VoiceNameTakenError
from cosyagent.voices.synthesizer import VoiceUnavailableError

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


@dataclass(frozen=True)
class ErrorMapping:
    status: int
    code: str | None  # None: the error's own ``code`` (the voice library's errors have one)
    param: str | None = None  # where the error does not name its own ``param``
    prefix: str = ""  # said before the error's message


# First match wins: subclasses before their bases.
DOMAIN_ERRORS: tuple[tuple[type[Exception], ErrorMapping], ...] = (
    (VoiceIdNotFoundError, ErrorMapping(404, None)),
    (VoiceNameTakenError, ErrorMapping(409, None)),
    (VoiceLibraryError, ErrorMapping(400, None)),
    (AudioTooLongError, ErrorMapping(400, "audio_too_long", "file")),
    (
        AudioDecodeError,
        ErrorMapping(
            400,
            "invalid_audio",
            "file",
            "the file is not audio we can decode (wav, mp3, ogg/opus, flac, webm, m4a...): ",
        ),
    ),
    (AudioCodecError, ErrorMapping(500, "audio_codec_error")),
    (UnsupportedLanguageError, ErrorMapping(400, None, "file")),
    (UnspeakableTextError, ErrorMapping(400, None, "input")),
    (EngineUnavailableError, ErrorMapping(503, "engine_unavailable")),
    (EngineError, ErrorMapping(500, "engine_error")),
)


def domain_error(exc: Exception) -> ApiError:
    """``exc`` as the API answers it, by :data:`DOMAIN_ERRORS`; a voice that cannot be spoken
    is answered as the library's refusal."""
    if isinstance(exc, VoiceUnavailableError):
        exc = exc.reason
    mapping = next((m for kind, m in DOMAIN_ERRORS if isinstance(exc, kind)), ErrorMapping(500, "internal_error"))
    code = mapping.code or getattr(exc, "code", None)
    param = getattr(exc, "param", None) or mapping.param
    return ApiError(mapping.status, f"{mapping.prefix}{exc}", param=param, code=code)


def error_event_body(exc: Exception) -> dict[str, Any]:
    """The ``error`` object of a stream that has already started (SSE): no status to set any more."""
    error = domain_error(exc)
    return error_body(error.message, error.kind, error.param, error.code)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_domain_error(request: Request, exc: Exception) -> Response:
        return error_response(domain_error(exc))

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
    for kind, _ in DOMAIN_ERRORS:
        app.add_exception_handler(kind, on_domain_error)
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
    elif param is None and tuple(first.get("loc", ())) == ("body",):  # a form, text or a JSON array
        message, code = (
            "the request body must be a JSON object, sent with Content-Type: application/json",
            "invalid_json",
        )
    else:
        message, code = f"invalid value for {param!r}: {first.get('msg', 'invalid')}", "invalid_value"
    return ApiError(400, message, param=param, code=code)
