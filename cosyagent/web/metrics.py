"""`GET /metrics`: the process's Prometheus metrics, and the HTTP error counting behind them.

With ``server.api_keys`` set, ``/metrics`` asks for a key like every ``/v1`` route (the API key
middleware covers it; Prometheus sends one with ``authorization: {credentials: ...}`` in its
scrape config). Without keys it is open.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cosyagent.telemetry import Telemetry

logger = logging.getLogger(__name__)

_MAX_ERROR_BODY = 64 * 1024  # error bodies are small JSON; past this the code is not read


def metrics_router(telemetry: Telemetry) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        body, content_type = telemetry.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return router


class ErrorCountingMiddleware:
    """Counts every HTTP error response (status >= 400) in ``cosyagent_errors_total{source="http"}``.

    The ``code`` label is the OpenAI-style body's ``error.code`` (its ``type`` when the code
    is null), ``http_<status>`` for other bodies, and ``internal_error`` for an exception
    that escapes the app. Refused WebSocket handshakes (a 401) count too.
    """

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self._telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()
        counted = False

        async def observe(message: Message) -> None:
            nonlocal status, counted
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = int(message["status"])
            elif kind in ("http.response.body", "websocket.http.response.body") and status >= 400 and not counted:
                if len(body) < _MAX_ERROR_BODY:
                    body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    counted = True
                    self._telemetry.count_error("http", _error_code(bytes(body), status))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        except Exception:
            if not counted:
                self._telemetry.count_error("http", "internal_error")
            raise


def _error_code(body: bytes, status: int) -> str:
    try:
        error = json.loads(body)["error"]
        code = error.get("code") or error.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        code = None
    return code if isinstance(code, str) and code else f"http_{status}"
