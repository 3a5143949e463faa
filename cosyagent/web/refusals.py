"""Refusing a request from an ASGI middleware, before any route runs, with OpenAI's error shape.

A refused WebSocket handshake gets an HTTP response too (the ASGI ``websocket.http.response``
extension; uvicorn has it) or, failing that, a policy-violation close before accepting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import Scope, Send

from cosyagent.web.errors import error_body

_CLOSE_POLICY_VIOLATION = 1008


async def refuse(
    scope: Scope, send: Send, status: int, message: str, code: str | None, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(error_body(message, "invalid_request_error", None, code), separators=(",", ":")).encode()
    response_headers = [(b"content-type", b"application/json"), *headers]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": response_headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": _CLOSE_POLICY_VIOLATION, "reason": code or message[:120]})
