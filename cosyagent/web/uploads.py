"""Request body limits: an upload over the limit gets an OpenAI-style 413, not a full disk.

A pure ASGI middleware counts the body as the route reads it (multipart parsing spools
files to disk as they arrive) and stops the request when it passes the limit of its
path. A body declared too large by ``Content-Length`` is refused before it is parsed.
Either way the rest of the body is read and thrown away, up to a bound, so that the
client, still sending, gets to read the answer instead of a reset connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cosyagent.web.errors import ApiError, error_body

logger = logging.getLogger(__name__)

_DRAIN_FACTOR = 4  # read and drop at most this many times the limit before giving up on the client


class BodyTooLargeError(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than the limit of {_human(limit)}",
            code="request_too_large",
        )


class BodyLimitMiddleware:
    """``limits`` maps exact paths (e.g. ``/v1/audio/transcriptions``) and path prefixes
    ending in ``/`` (e.g. ``/v1/voices/``) to their maximum body size in bytes."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        self.app = app
        self._limits = dict(limits)

    def limit_for(self, path: str) -> int | None:
        if path in self._limits:
            return self._limits[path]
        prefixes = [p for p in self._limits if p.endswith("/") and path.startswith(p)]
        return self._limits[max(prefixes, key=len)] if prefixes else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            logger.info("refused %s: %d bytes declared, limit %d", scope["path"], declared, limit)
            await _drain(receive, limit * _DRAIN_FACTOR)
            await _send_too_large(send, limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    logger.info("refused %s: body passed the limit of %d bytes", scope["path"], limit)
                    if message.get("more_body", False):
                        await _drain(receive, limit * _DRAIN_FACTOR)
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_too_large(send: Send, limit: int) -> None:
    error = BodyTooLargeError(limit)
    body = json.dumps(error_body(error.message, error.kind, None, error.code), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _human(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size / 1024:g} KiB"
