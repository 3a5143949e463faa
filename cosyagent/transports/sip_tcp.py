"""SIP over TCP (RFC 3261 section 18.3): a stream of messages, each framed by its headers'
end and its ``Content-Length``; and the address a message came from, on either transport."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from cosyagent.transports.sip_message import MAX_MESSAGE_BYTES

logger = logging.getLogger(__name__)

_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d{1,9})[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Address:
    """Where a message came from, and where its answers go: over UDP to ``host``:``port``, over
    TCP on the connection from there."""

    host: str
    port: int
    transport: str  # "udp" | "tcp"

    def __str__(self) -> str:
        return f"{self.transport} {self.host}:{self.port}"


async def serve_stream(reader: asyncio.StreamReader, addr: Address, handle: Callable[[bytes, Address], None]) -> None:
    """Cut the stream into messages for ``handle`` until it ends. A head over
    :data:`MAX_MESSAGE_BYTES` (the reader's limit) or a body announced over it closes the
    connection: the stream cannot be resynchronized. Cancel-safe."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the peer closed the connection
        except asyncio.LimitOverrunError:
            logger.info("sip: closed the connection from %s: headers over %d bytes", addr, MAX_MESSAGE_BYTES)
            return
        head = head.lstrip(b"\r\n")
        if not head.strip():
            continue  # CRLF keep-alives (RFC 5626)
        match = _CONTENT_LENGTH.search(head)
        length = int(match.group(1)) if match else 0  # none: no body (the parser answers what lacks one)
        if len(head) + length > MAX_MESSAGE_BYTES:
            logger.info("sip: closed the connection from %s: a message of %d bytes", addr, len(head) + length)
            return
        try:
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        try:
            handle(head + body, addr)
        except Exception:  # one message must never take the connection down
            logger.exception("sip: failed to handle a message from %s", addr)
