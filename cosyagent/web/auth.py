"""Optional API keys: with keys configured, every ``/v1`` route and socket, and ``/metrics``, needs
``Authorization: Bearer <key>``. Browsers cannot set headers on a WebSocket, so the realtime
socket also takes the key as the subprotocol ``openai-insecure-api-key.<key>``, as OpenAI's
browser SDKs send it (``insecure``: a key in a web page is visible to its user). Where a
session starts, a client secret (``ek_...``, :mod:`cosyagent.web.client_secrets`) is accepted
in both forms too.

A pure ASGI middleware, so it covers HTTP routes and the realtime WebSocket alike, and
routes added later too (a refused handshake gets an HTTP 401: :mod:`cosyagent.web.refusals`).
CORS preflight (``OPTIONS``) passes: the CORS middleware answers it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from cosyagent.web.client_secrets import ClientSecretError, ClientSecretStore, is_client_secret
from cosyagent.web.refusals import refuse

logger = logging.getLogger(__name__)

_PROTECTED_PREFIX = "/v1"
_PROTECTED_PATHS = ("/metrics",)  # outside /v1, but says how the server is used


class ApiKeyMiddleware:
    """Checks API keys, and client secrets where a session starts: a valid secret goes to the
    route as ``scope["state"]["client_secret"]`` (with or without API keys configured)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        secrets: ClientSecretStore | None = None,
        open_prefixes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._open_prefixes = tuple(open_prefixes)  # paths that check their own credentials
        self._keys = [key.encode() for key in keys]
        self._secrets = secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] not in ("http", "websocket") or not _protected(path) or path.startswith(self._open_prefixes):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        if authorization is None and scope["type"] == "websocket":
            authorization = _subprotocol_key(scope.get("subprotocols", ()))
        token = _bearer_token(authorization)
        if self._secrets is not None and token is not None and is_client_secret(token) and _opens_session(scope):
            try:
                scope.setdefault("state", {})["client_secret"] = self._secrets.check(token)
            except ClientSecretError as exc:
                logger.info("refused %s %s: %s", scope["type"], scope["path"], exc)
                await refuse(scope, send, 401, str(exc), "invalid_client_secret")
                return
            await self.app(scope, receive, send)
            return
        if not self._keys:
            await self.app(scope, receive, send)
            return
        problem = self._check(authorization)
        if problem is None:
            await self.app(scope, receive, send)
            return
        message, code = problem
        logger.info("refused %s %s: %s", scope["type"], scope["path"], code or "no key")
        await refuse(scope, send, 401, message, code, headers=[(b"www-authenticate", b"Bearer")])

    def _check(self, authorization: str | None) -> tuple[str, str | None] | None:
        """None if the header carries a valid key, else (message, code)."""
        if not authorization:
            return (
                "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer KEY'"
                " (on a WebSocket from a browser: the subprotocol 'openai-insecure-api-key.KEY').",
                None,
            )
        scheme, _, token = authorization.partition(" ")
        presented = token.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            return "the Authorization header must be 'Bearer KEY'", "invalid_api_key"
        # compare_digest against every key, so the time taken says nothing about which matched
        matched = [hmac.compare_digest(presented, key) for key in self._keys]
        if not any(matched):
            return "Incorrect API key provided.", "invalid_api_key"
        return None


SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."
_SESSION_PATHS = ("/v1/realtime", "/v1/realtime/calls")  # where a client secret is accepted


def _opens_session(scope: Scope) -> bool:
    path = str(scope["path"]).rstrip("/")
    return path in _SESSION_PATHS or path.startswith("/v1/realtime/calls/")


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _subprotocol_key(subprotocols: Iterable[str]) -> str | None:
    """The key a browser sent as a WebSocket subprotocol, as an Authorization value."""
    for protocol in subprotocols:
        if protocol.startswith(SUBPROTOCOL_KEY_PREFIX):
            return "Bearer " + protocol.removeprefix(SUBPROTOCOL_KEY_PREFIX)
    return None


def _protected(path: str) -> bool:
    return path == _PROTECTED_PREFIX or path.startswith(_PROTECTED_PREFIX + "/") or path in _PROTECTED_PATHS
