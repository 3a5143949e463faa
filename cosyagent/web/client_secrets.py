"""``POST /v1/realtime/client_secrets``: short-lived keys a web page may hold instead of an API key.

A server with API keys cannot hand its key to a browser page (whoever opens the page could
read it). The page's own backend asks for a client secret with its API key instead, and gives
the page the secret: ``ek_...``, valid for ``expires_after.seconds`` (10-7200, default 600),
accepted only where a session starts (``WS /v1/realtime`` as a Bearer token or the
``openai-insecure-api-key.`` subprotocol, ``POST /v1/realtime/calls``), and every session it
opens starts with the configuration fixed at creation. Secrets live in this process's memory:
a restart ends them.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from cosyagent.runtime import Runtime
from cosyagent.runtime.sessions import SessionConfigError
from cosyagent.web.errors import ApiError

PREFIX = "ek_"
_SHAPE = re.compile(r"ek_[A-Za-z0-9_-]{32,64}")
DEFAULT_TTL_S, MIN_TTL_S, MAX_TTL_S = 600, 10, 7200
MAX_LIVE_SECRETS = 10_000  # a bound on memory; expired ones are dropped first


class ClientSecretError(Exception):
    """A presented client secret does not open a session (401)."""


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: float  # seconds since the epoch
    model: str | None
    session: dict[str, Any]  # the session.update body every session it opens starts with


class ClientSecretStore:
    """The live client secrets of this process (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, ClientSecret] = {}

    def issue(self, model: str | None, session: dict[str, Any], ttl_s: int) -> ClientSecret:
        now = self._clock()
        with self._lock:
            self._live = {v: s for v, s in self._live.items() if s.expires_at > now}
            if len(self._live) >= MAX_LIVE_SECRETS:
                raise ApiError(429, f"{MAX_LIVE_SECRETS} client secrets are live; let some expire", code="rate_limit")
            secret = ClientSecret(PREFIX + secrets.token_urlsafe(32), now + ttl_s, model, session)
            self._live[secret.value] = secret
        return secret

    def check(self, value: str) -> ClientSecret:
        """The secret named by ``value``; ClientSecretError saying why it opens nothing."""
        if not _SHAPE.fullmatch(value):
            raise ClientSecretError("malformed client secret: expected 'ek_' and 32-64 URL-safe characters")
        with self._lock:
            secret = self._live.get(value)
        if secret is None:
            raise ClientSecretError("unknown client secret (never issued by this server, or the server restarted)")
        if secret.expires_at <= self._clock():
            raise ClientSecretError(f"the client secret expired at {int(secret.expires_at)} (seconds since the epoch)")
        return secret


def is_client_secret(token: str) -> bool:
    return token.startswith(PREFIX)


def client_secrets_router(runtime: Runtime, store: ClientSecretStore) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/realtime/client_secrets")
    async def create_client_secret(request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        unknown = set(body) - {"expires_after", "session"}
        if unknown:
            param = sorted(unknown)[0]
            raise ApiError(400, f"unknown parameter: {param}", param=param, code="unknown_parameter")
        ttl_s = _ttl(body.get("expires_after"))
        session = body.get("session") or {"type": "realtime"}
        if not isinstance(session, dict):
            raise ApiError(400, "session must be an object", param="session", code="invalid_type")
        model = session.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "session.model must be a string", param="session.model", code="invalid_type")
        settings = {key: value for key, value in session.items() if key != "model"}
        try:
            effective = runtime.sessions.preview(model, settings)
        except SessionConfigError as exc:
            raise ApiError(400, exc.message, param=exc.param or "session", code=exc.code) from exc
        secret = store.issue(model, settings, ttl_s)
        return {"value": secret.value, "expires_at": int(secret.expires_at), "session": effective}

    return router


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _ttl(expires_after: Any) -> int:
    if expires_after is None:
        return DEFAULT_TTL_S
    if not isinstance(expires_after, dict):
        raise ApiError(400, "expires_after must be an object", param="expires_after", code="invalid_type")
    if expires_after.get("anchor", "created_at") != "created_at":
        raise ApiError(
            400, "expires_after.anchor must be 'created_at'", param="expires_after.anchor", code="invalid_value"
        )
    seconds = expires_after.get("seconds", DEFAULT_TTL_S)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise ApiError(
            400,
            f"expires_after.seconds must be an integer from {MIN_TTL_S} to {MAX_TTL_S}",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return seconds
