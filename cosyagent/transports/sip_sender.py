"""What the SIP endpoint sends, and the server transactions' memory (RFC 3261 section 17.2).

Responses go to the address the request came from (as with ``rport``), or back on its TCP
connection (:mod:`.sip_tcp`). The last final response to each request (by Call-ID, Via
branch and method) is kept 32 s, so a retransmitted request is answered again and never
starts anything twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from cosyagent.transports.sip_message import SipMessage
from cosyagent.transports.sip_tcp import Address

T1 = 0.5
TRANSACTION_S = 64 * T1  # timer B/F/H/J: 32 s
MAX_CACHED = 4096


class SipSender:
    """The endpoint's UDP transport and TCP connections, and its answered requests."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.DatagramTransport | None = None
        self.streams: dict[Address, asyncio.StreamWriter] = {}  # open TCP connections, by peer
        self._answered: OrderedDict[tuple[str, str, str], tuple[float, bytes]] = OrderedDict()

    @property
    def port(self) -> int:
        if self.transport is None:
            raise RuntimeError("the SIP server is not started")
        return int(self.transport.get_extra_info("sockname")[1])

    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def answered(self, request: SipMessage) -> bytes | None:
        """The final response already sent to this request (a retransmission), if any."""
        cached = self._answered.get((request.call_id, request.branch, request.method))
        return cached[1] if cached is not None else None

    def answer(self, request: SipMessage, answer: SipMessage, addr: Address) -> None:
        """Send a final response and keep it for the request's retransmissions."""
        data = answer.to_bytes()
        now = time.monotonic()
        self._answered[(request.call_id, request.branch, request.method)] = (now, data)
        while self._answered and (
            len(self._answered) > MAX_CACHED or next(iter(self._answered.values()))[0] < now - TRANSACTION_S
        ):
            self._answered.popitem(last=False)
        self.send(data, addr)

    def send(self, data: bytes, addr: Address) -> None:
        if addr.transport == "tcp":
            writer = self.streams.get(addr)
            if writer is not None and not writer.is_closing():
                writer.write(data)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, (addr.host, addr.port))
