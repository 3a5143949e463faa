"""A SIP user agent server over UDP and TCP (RFC 3261): every answered INVITE is one Realtime session.

What it answers: OPTIONS (200, with Allow and Accept); INVITE with an SDP offer (100 Trying,
then 200 OK with the SDP answer, PCMU or PCMA; 488 without a common codec; 503 when the
server is at capacity or has no RTP port free); ACK; BYE (200; the session ends); CANCEL
(200: an INVITE is answered at once, so a CANCEL always comes too late to change it); a
re-INVITE, 488; a method it knows but does not serve, 405;
any other, 501. A message that breaks RFC 3261 gets 400 with the reason as its phrase when
it names enough to be answered (Via, From, To, Call-ID, CSeq), else it is dropped and logged.

Transactions: the last response to each request (by Call-ID, Via branch and method) is kept
32 s, so a retransmitted request is answered again and never starts a second session. The
200 OK to an INVITE is resent (0.5 s, doubling to 4 s) until its ACK; with no ACK in 32 s
the call ends. When a session ends on the server's side (the server stops, the caller sent
no RTP for ``sip.rtp_timeout_s``), the server sends BYE. Responses go to the address the
request came from (as with ``rport``), or back on its TCP connection (:mod:`.sip_tcp`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosyagent.runtime.sessions import Admission, SessionConfigError, SessionRefused
from cosyagent.transports.media_stream import session_config
from cosyagent.transports.rtp import PortRangeExhausted, bind_rtp_socket
from cosyagent.transports.sdp import SdpError, answer, negotiate
from cosyagent.transports.sip_call import SipMedia
from cosyagent.transports.sip_message import (
    MAX_MESSAGE_BYTES,
    SipMessage,
    SipParseError,
    new_branch,
    new_tag,
    parse,
    response,
    tag_of,
    uri_of,
)
from cosyagent.transports.sip_tcp import Address, serve_stream

logger = logging.getLogger(__name__)

TRANSPORT = "sip"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
KNOWN_UNSERVED = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "INFO", "UPDATE", "PRACK", "MESSAGE", "REFER", "PUBLISH"}
)
T1 = 0.5
TRANSACTION_S = 64 * T1  # timer B/F/H/J: 32 s
MAX_CACHED = 4096
Admit = Callable[[dict[str, Any]], Admission]


@dataclass(frozen=True)
class SipSettings:
    host: str
    port: int
    rtp_port_min: int
    rtp_port_max: int
    rtp_timeout_s: float
    transports: tuple[str, ...] = ("udp",)
    user_agent: str = "cosyagent"


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    invite: SipMessage
    remote: Address
    media: SipMedia
    ok: bytes  # the 200 OK, resent until the ACK
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    remote_ended: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        try:
            self._server.message_received(data, Address(str(addr[0]), int(addr[1]), "udp"))
        except Exception:  # one datagram must never take the endpoint down
            logger.exception("sip: failed to handle a datagram from %s:%s", addr[0], addr[1])


class SipServer:
    """The SIP endpoint of one process. :meth:`start` binds the UDP port (OSError when it
    cannot be), :meth:`stop` hangs up every call (BYE) and unbinds."""

    def __init__(self, settings: SipSettings, admit: Admit) -> None:
        self.settings = settings
        self._admit = admit
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._streams: dict[Address, asyncio.StreamWriter] = {}  # open TCP connections, by peer
        self._dialogs: dict[str, Dialog] = {}
        self._answered: OrderedDict[tuple[str, str, str], tuple[float, bytes]] = OrderedDict()
        self._byes: dict[str, asyncio.Event] = {}  # call id -> our BYE's 200 arrived
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0  # datagrams that could not be answered

    @property
    def port(self) -> int:
        if self._transport is None:
            raise RuntimeError("the SIP server is not started")
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def calls(self) -> list[SipMedia]:
        """The calls answered and not yet ended."""
        return [dialog.media for dialog in self._dialogs.values()]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.settings.host, self.settings.port)
        )
        self._transport = transport
        if "tcp" in self.settings.transports:
            try:
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, self.settings.host, self.port, limit=MAX_MESSAGE_BYTES
                )
            except OSError:
                transport.close()
                raise
        logger.info("SIP endpoint on %s %s:%d", "/".join(self.settings.transports), self.settings.host, self.port)

    async def stop(self) -> None:
        for dialog in list(self._dialogs.values()):
            dialog.media.hang_up()
        tasks = [task for dialog in self._dialogs.values() for task in dialog.tasks]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10.0)
        if self._tasks:  # the BYEs those calls sent: a moment for their 200 OK
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for task in [*tasks, *self._tasks]:
            task.cancel()
        await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._streams.values()):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- receiving -----------------------------------------------------------------------

    def message_received(self, data: bytes, addr: Address) -> None:
        """One message, from a datagram or a TCP stream (already framed by Content-Length)."""
        if not data.strip():
            return  # a CRLF keep-alive (RFC 5626)
        if len(data) > 8 * MAX_MESSAGE_BYTES:
            self._drop(addr, f"a datagram of {len(data)} bytes")
            return
        try:
            message = parse(data)
        except SipParseError as exc:
            if exc.answerable and exc.partial is not None:
                status = 513 if exc.reason == "Message Too Large" else 400
                logger.info("sip: %d to %s: %s", status, addr, exc.reason)
                self._send(response(exc.partial, status, exc.reason).to_bytes(), addr)
            else:
                self._drop(addr, exc.reason)
            return
        if not message.is_request:
            self._response(message)
            return
        key = (message.call_id, message.branch, message.method)
        cached = self._answered.get(key)
        if cached is not None and message.method != "ACK":
            self._send(cached[1], addr)  # a retransmission: the same answer, nothing new
            return
        self._request(message, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        addr = Address(str(host), int(port), "tcp")
        self._streams[addr] = writer
        try:
            await serve_stream(reader, addr, self.message_received)
        finally:
            self._streams.pop(addr, None)
            writer.close()

    def _drop(self, addr: Address, reason: str) -> None:
        self.dropped += 1
        logger.info("sip: dropped a message from %s that cannot be answered: %s", addr, reason)

    def _request(self, request: SipMessage, addr: Address) -> None:
        method = request.method
        if method == "INVITE":
            self._invite(request, addr)
        elif method == "ACK":
            dialog = self._dialogs.get(request.call_id)
            if dialog is not None:
                dialog.acked.set()
        elif method == "BYE":
            self._bye(request, addr)
        elif method == "CANCEL":
            self._cancel(request, addr)
        elif method == "OPTIONS":
            ok = response(request, 200, to_tag=new_tag())
            ok.headers += [("Allow", ALLOW), ("Accept", "application/sdp"), ("Server", self.settings.user_agent)]
            self._answer(request, ok, addr)
        elif method in KNOWN_UNSERVED:
            refused = response(request, 405, to_tag=new_tag())
            refused.headers.append(("Allow", ALLOW))
            self._answer(request, refused, addr)
        else:
            self._answer(request, response(request, 501, to_tag=new_tag()), addr)

    def _response(self, message: SipMessage) -> None:
        try:
            _, method = message.cseq
        except SipParseError:
            return
        if method == "BYE" and message.status >= 200 and message.call_id in self._byes:
            self._byes[message.call_id].set()

    # --- requests ------------------------------------------------------------------------

    def _invite(self, request: SipMessage, addr: Address) -> None:
        if tag_of(request.header("To")):
            known = request.call_id in self._dialogs
            status, reason = (488, "re-INVITE is not supported") if known else (481, None)
            self._answer(request, response(request, status, reason), addr)
            return
        if request.call_id in self._dialogs:
            self._answer(request, response(request, 400, "Call-ID already in use", new_tag()), addr)
            return
        if (request.header("Content-Type") or "").split(";")[
            0
        ].strip().lower() != "application/sdp" or not request.body:
            self._answer(request, response(request, 488, "An INVITE needs an SDP offer", new_tag()), addr)
            return
        try:
            negotiated = negotiate(request.body)
        except SdpError as exc:
            logger.info("sip call %s: 488: %s", request.call_id, exc.reason)
            self._answer(request, response(request, 488, exc.reason, new_tag()), addr)
            return
        self._send(response(request, 100).to_bytes(), addr)
        try:
            admission = self._admit(session_config(negotiated.audio))
        except SessionRefused as refusal:
            logger.warning("sip call %s refused: %s", request.call_id, refusal.message)
            busy = response(request, 503, refusal.message, new_tag())
            busy.headers.append(("Retry-After", str(refusal.retry_after_s)))
            self._answer(request, busy, addr)
            return
        except SessionConfigError as exc:
            self._answer(request, response(request, 500, exc.message, new_tag()), addr)
            return
        settings = self.settings
        try:
            sock = bind_rtp_socket(settings.host, settings.rtp_port_min, settings.rtp_port_max)
        except (PortRangeExhausted, OSError) as exc:
            admission.release()
            logger.warning("sip call %s refused: %s", request.call_id, exc)
            self._answer(request, response(request, 503, "No RTP port free", new_tag()), addr)
            return
        media = SipMedia(request.call_id, sock, negotiated, settings.rtp_timeout_s)
        local_tag = new_tag()
        ok = response(request, 200, to_tag=local_tag)
        ok.headers += [
            ("Contact", f"<sip:{self._hostport()}{';transport=tcp' if addr.transport == 'tcp' else ''}>"),
            ("Allow", ALLOW),
            ("Server", settings.user_agent),
            ("Content-Type", "application/sdp"),
        ]
        ok.body = answer(negotiated, settings.host, media.port)
        dialog = Dialog(request.call_id, local_tag, request, addr, media, ok.to_bytes())
        self._dialogs[request.call_id] = dialog
        self._answer(request, ok, addr)
        logger.info(
            "sip call %s answered: %s from %s, RTP port %d",
            request.call_id,
            negotiated.audio.encoding.upper(),
            addr,
            media.port,
        )
        dialog.tasks = [
            asyncio.create_task(self._run(dialog, admission), name=f"sip-{request.call_id}-call"),
            asyncio.create_task(self._resend_ok(dialog), name=f"sip-{request.call_id}-200"),
        ]

    def _bye(self, request: SipMessage, addr: Address) -> None:
        dialog = self._dialogs.get(request.call_id)
        if dialog is None or tag_of(request.header("To")) != dialog.local_tag:
            self._answer(request, response(request, 481), addr)
            return
        dialog.remote_ended = True
        dialog.acked.set()  # a BYE confirms the dialog as well as an ACK would
        self._answer(request, response(request, 200), addr)
        logger.info("sip call %s: the caller hung up", request.call_id)
        dialog.media.hang_up()

    def _cancel(self, request: SipMessage, addr: Address) -> None:
        dialog = self._dialogs.get(request.call_id)
        if dialog is None or dialog.invite.branch != request.branch:
            self._answer(request, response(request, 481), addr)
            return
        # Every INVITE is answered at once, so a CANCEL always comes after the 200 OK: it
        # changes nothing (RFC 3261 section 9.2); the caller ends the call with BYE.
        self._answer(request, response(request, 200), addr)

    # --- the call's lifetime -------------------------------------------------------------

    async def _run(self, dialog: Dialog, admission: Admission) -> None:
        try:
            with admission:
                await dialog.media.run(admission.session)
        except Exception:
            logger.exception("sip call %s failed", dialog.call_id)
        finally:
            for task in dialog.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            self._dialogs.pop(dialog.call_id, None)
            if not dialog.remote_ended:
                bye = asyncio.create_task(self._send_bye(dialog), name=f"sip-{dialog.call_id}-bye")
                self._tasks.add(bye)
                bye.add_done_callback(self._tasks.discard)

    async def _resend_ok(self, dialog: Dialog) -> None:
        interval, deadline = T1, time.monotonic() + TRANSACTION_S
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dialog.acked.wait(), interval)
                return
            self._send(dialog.ok, dialog.remote)
            interval = min(interval * 2, 4.0)
        logger.warning("sip call %s: no ACK for the 200 OK in %g s: hanging up", dialog.call_id, TRANSACTION_S)
        dialog.media.hang_up()

    async def _send_bye(self, dialog: Dialog) -> None:
        invite = dialog.invite
        target = uri_of(invite.header("Contact") or invite.header("From") or "")
        to_header = next(value for name, value in invite.headers if name == "To")
        bye = SipMessage(
            method="BYE",
            uri=target,
            headers=[
                ("Via", f"SIP/2.0/{dialog.remote.transport.upper()} {self._hostport()};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"{to_header};tag={dialog.local_tag}"),
                ("To", invite.header("From") or ""),
                ("Call-ID", dialog.call_id),
                ("CSeq", "1 BYE"),
                ("User-Agent", self.settings.user_agent),
            ],
        )
        data = bye.to_bytes()
        done = self._byes[dialog.call_id] = asyncio.Event()
        logger.info("sip call %s: hanging up (BYE)", dialog.call_id)
        try:
            interval = T1
            for _ in range(5):
                self._send(data, dialog.remote)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), interval)
                    return
                interval = min(interval * 2, 4.0)
            logger.info("sip call %s: no answer to our BYE", dialog.call_id)
        finally:
            self._byes.pop(dialog.call_id, None)

    # --- sending -------------------------------------------------------------------------

    def _answer(self, request: SipMessage, answer: SipMessage, addr: Address) -> None:
        """Send a final response and keep it for the request's retransmissions."""
        data = answer.to_bytes()
        now = time.monotonic()
        self._answered[(request.call_id, request.branch, request.method)] = (now, data)
        while self._answered and (
            len(self._answered) > MAX_CACHED or next(iter(self._answered.values()))[0] < now - TRANSACTION_S
        ):
            self._answered.popitem(last=False)
        self._send(data, addr)

    def _send(self, data: bytes, addr: Address) -> None:
        if addr.transport == "tcp":
            writer = self._streams.get(addr)
            if writer is not None and not writer.is_closing():
                writer.write(data)
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, (addr.host, addr.port))

    def _hostport(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
