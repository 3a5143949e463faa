"""Protection of a local server against the web pages its user visits.

A server on 127.0.0.1 is still reachable from every page the user's browser opens. Two rules
close that door, for HTTP routes and the realtime WebSocket alike:

- **Host allowlist** (always): the ``Host`` header must be an IP address, ``localhost``, or a
  name in ``server.allowed_hosts``. A DNS-rebinding page reaches 127.0.0.1 under its own
  domain name, so its requests carry that name and are refused.
- **Origin check** (when no API key is configured; a key already keeps other pages out): a
  request sent by a page (it has an ``Origin`` header) that could change something (any method
  but GET/HEAD/OPTIONS, and every WebSocket handshake) must come from the server's own origin
  or one of ``server.cors_origins``. Clients that are not browsers send no ``Origin`` and pass.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from cosyagent.web.refusals import refuse

logger = logging.getLogger(__name__)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(host_header: str) -> str:
    """The name part of a Host header: no port, no IPv6 brackets, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def is_local_or_ip(name: str) -> bool:
    """IP literals and localhost names: what no DNS-rebinding page can put in a Host header."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class LocalGuardMiddleware:
    def __init__(
        self, app: ASGIApp, *, allowed_hosts: Iterable[str], cors_origins: Iterable[str], check_origin: bool
    ) -> None:
        self.app = app
        self._hosts = {host_name(h) for h in allowed_hosts}
        self._any_host = "*" in self._hosts
        self._origins = {o.rstrip("/").lower() for o in cors_origins}
        self._check_origin = check_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = self._host_problem(headers.get("host")) or self._origin_problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        message, code = problem
        logger.warning("refused %s %s: %s", scope["type"], scope["path"], message)
        await refuse(scope, send, 403, message, code)

    def _host_problem(self, host: str | None) -> tuple[str, str] | None:
        if host is None or self._any_host:
            return None
        name = host_name(host)
        if is_local_or_ip(name) or name in self._hosts:
            return None
        return (
            f"Host {name!r} is not allowed: this server answers to IP addresses, localhost and "
            "the names in server.allowed_hosts (COSYAGENT_ALLOWED_HOSTS)",
            "host_not_allowed",
        )

    def _origin_problem(self, scope: Scope, headers: Headers) -> tuple[str, str] | None:
        origin = headers.get("origin")
        if not self._check_origin or origin is None:
            return None
        if scope["type"] == "http" and scope["method"] in _SAFE_METHODS:
            return None
        origin = origin.rstrip("/").lower()
        own_host = headers.get("host", "").lower()
        if origin in self._origins or "*" in self._origins or (own_host and urlsplit(origin).netloc == own_host):
            return None
        return (
            f"requests from pages on {origin} are refused: only this server's own pages and "
            "server.cors_origins may use it while no API key is configured",
            "origin_not_allowed",
        )
