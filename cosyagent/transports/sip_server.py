"""A SIP user agent server over UDP and TCP (RFC 3261): every answered INVITE is one Realtime session.

What it answers: OPTIONS (200, with Allow and Accept); INVITE with an SDP offer (100 Trying,
then 200 OK with the SDP answer, G.722, PCMU or PCMA (``sip.codecs``); 488 without a common codec; 503 when the
server is at capacity or has no RTP port free); ACK; BYE (200; the session ends); CANCEL
(200, and 487 to a ringing INVITE); NOTIFY in a call (200: the progress of a transfer);
a re-INVITE in the call (hold, resume: :func:`.sip_dialog.reinvite`); a method it knows but
does not serve, 405; any other, 501. A message that breaks RFC 3261 gets 400 with the
reason as its phrase when it names enough to be answered (Via, From, To, Call-ID, CSeq),
else it is dropped and logged.

With call control (``sip.webhook_url``, :mod:`.sip_calls`) an INVITE rings (180) until the
webhook's client accepts or rejects it; without, it is answered at once with the default
session. Every call has an id of the HTTP API (``rtc_...``), named in the log and the webhook.

Transactions (:mod:`.sip_sender`): a retransmitted request is answered again and never starts
a second session. The 200 OK to an INVITE is resent (0.5 s, doubling to 4 s) until its ACK;
with no ACK in 32 s the call ends. When a session ends on the server's side (a hangup
request, the server stops, the caller sent no RTP for ``sip.rtp_timeout_s``), the server
sends BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cosyagent.runtime.sessions import Admission, SessionConfigError, SessionRefused
from cosyagent.transports.phone_calls import SIP, PhoneCalls
from cosyagent.transports.rtp import PortRangeExhausted, bind_rtp_socket
from cosyagent.transports.sdp import SIP_CODECS, Negotiated, SdpError, answer, codec_preference, negotiate
from cosyagent.transports.sip_call import SipMedia
from cosyagent.transports.sip_calls import CallControl, SipCalls, phone_session
from cosyagent.transports.sip_control import new_call_id
from cosyagent.transports.sip_dialog import ClientTransactions, Dialog, reinvite
from cosyagent.transports.sip_message import (
    MAX_MESSAGE_BYTES,
    SipMessage,
    SipParseError,
    new_tag,
    parse,
    response,
    tag_of,
)
from cosyagent.transports.sip_sender import T1, TRANSACTION_S, SipSender
from cosyagent.transports.sip_tcp import Address, serve_stream

logger = logging.getLogger(__name__)

TRANSPORT = "sip"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY"
KNOWN_UNSERVED = frozenset({"REGISTER", "SUBSCRIBE", "INFO", "UPDATE", "PRACK", "MESSAGE", "REFER", "PUBLISH"})
BYE_TIMEOUT_S = 11.5  # 0.5 + 1 + 2 + 4 + 4: five tries
Admit = Callable[[str | None, dict[str, Any]], Admission]  # (model, session config) -> a held slot


@dataclass(frozen=True)
class SipSettings:
    host: str
    port: int
    rtp_port_min: int
    rtp_port_max: int
    rtp_timeout_s: float
    transports: tuple[str, ...] = ("udp",)
    user_agent: str = "cosyagent"
    codecs: tuple[str, ...] = SIP_CODECS  # our order of preference (sip.codecs)


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
    cannot be), :meth:`stop` hangs up every call (BYE) and unbinds. :attr:`control` is the
    call-control API (accept, reject, refer, hangup); answered calls are live calls of
    ``phone_calls`` (shared with the carriers' streams) while their session runs."""

    def __init__(
        self, settings: SipSettings, admit: Admit, control: CallControl | None = None, calls: PhoneCalls | None = None
    ) -> None:
        self.settings = settings
        self.phone_calls = calls if calls is not None else PhoneCalls()
        self.codecs = codec_preference(settings.codecs)
        self._admit = admit
        self.sender = SipSender(settings.host)
        self.transactions = ClientTransactions(self.sender)
        self._tcp: asyncio.Server | None = None
        self._dialogs: dict[str, Dialog] = {}  # by SIP Call-ID
        self._tasks: set[asyncio.Task[None]] = set()
        self.control = SipCalls(self, control)
        self.dropped = 0  # datagrams that could not be answered

    @property
    def port(self) -> int:
        return self.sender.port

    @property
    def calls(self) -> list[SipMedia]:
        """The calls answered and not yet ended."""
        return [dialog.media for dialog in self._dialogs.values()]

    def dialog(self, public_id: str) -> Dialog | None:
        return next((dialog for dialog in self._dialogs.values() if dialog.public_id == public_id), None)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.settings.host, self.settings.port)
        )
        self.sender.transport = transport
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
        await self.control.close()
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
            for writer in list(self.sender.streams.values()):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        if self.sender.transport is not None:
            self.sender.transport.close()
            self.sender.transport = None

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
                self.sender.send(response(exc.partial, status, exc.reason).to_bytes(), addr)
            else:
                self._drop(addr, exc.reason)
            return
        if not message.is_request:
            self.transactions.response_received(message)
            return
        cached = self.sender.answered(message)
        if cached is not None and message.method != "ACK":
            self.sender.send(cached, addr)  # a retransmission: the same answer, nothing new
            return
        self._request(message, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        addr = Address(str(host), int(port), "tcp")
        self.sender.streams[addr] = writer
        try:
            await serve_stream(reader, addr, self.message_received)
        finally:
            self.sender.streams.pop(addr, None)
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
        elif method == "NOTIFY":
            self._notify(request, addr)
        elif method == "OPTIONS":
            ok = response(request, 200, to_tag=new_tag())
            ok.headers += [("Allow", ALLOW), ("Accept", "application/sdp"), ("Server", self.settings.user_agent)]
            self.sender.answer(request, ok, addr)
        elif method in KNOWN_UNSERVED:
            refused = response(request, 405, to_tag=new_tag())
            refused.headers.append(("Allow", ALLOW))
            self.sender.answer(request, refused, addr)
        else:
            self.sender.answer(request, response(request, 501, to_tag=new_tag()), addr)

    # --- requests ------------------------------------------------------------------------

    def _invite(self, request: SipMessage, addr: Address) -> None:
        if tag_of(request.header("To")):  # a re-INVITE (hold, resume, a new RTP address)
            dialog = self._dialogs.get(request.call_id)
            if dialog is None or tag_of(request.header("To")) != dialog.local_tag:
                self.sender.answer(request, response(request, 481), addr)
                return
            self.sender.answer(request, reinvite(dialog, request, self.settings.host, self.contact(addr)), addr)
            return
        if self.control.ringing_again(request, addr):
            return  # a retransmission of a ringing INVITE: it rang again
        if request.call_id in self._dialogs:
            self.sender.answer(request, response(request, 400, "Call-ID already in use", new_tag()), addr)
            return
        if (request.header("Content-Type") or "").split(";")[
            0
        ].strip().lower() != "application/sdp" or not request.body:
            self.sender.answer(request, response(request, 488, "An INVITE needs an SDP offer", new_tag()), addr)
            return
        try:
            negotiated = negotiate(request.body, self.codecs)
        except SdpError as exc:
            logger.info("sip call %s: 488: %s", request.call_id, exc.reason)
            self.sender.answer(request, response(request, 488, exc.reason, new_tag()), addr)
            return
        self.sender.send(response(request, 100).to_bytes(), addr)
        if self.control.enabled:
            self.control.ring(request, addr, negotiated)
            return
        with contextlib.suppress(SessionRefused, SessionConfigError, PortRangeExhausted, OSError):
            self.answer_call(new_call_id(), request, addr, negotiated, new_tag(), None, None)  # or a refusal

    def answer_call(
        self,
        public_id: str,
        request: SipMessage,
        addr: Address,
        negotiated: Negotiated,
        local_tag: str,
        model: str | None,
        session: dict[str, Any] | None,
    ) -> Dialog:
        """Admit the session, take an RTP port, send 200 OK and run the call. On a refusal the
        INVITE is answered (503, 500) and the exception raised: SessionRefused,
        SessionConfigError (only for a ``session`` of the webhook's client), PortRangeExhausted."""
        config = phone_session(session, negotiated)
        try:
            admission = self._admit(model, config)
        except SessionRefused as refusal:
            logger.warning("sip call %s refused: %s", public_id, refusal.message)
            busy = response(request, 503, refusal.message, local_tag)
            busy.headers.append(("Retry-After", str(refusal.retry_after_s)))
            self.sender.answer(request, busy, addr)
            raise
        except SessionConfigError as exc:
            if session is None:  # the server's own defaults: the call cannot be served
                self.sender.answer(request, response(request, 500, exc.message, local_tag), addr)
            raise
        settings = self.settings
        try:
            sock = bind_rtp_socket(settings.host, settings.rtp_port_min, settings.rtp_port_max)
        except (PortRangeExhausted, OSError) as exc:
            admission.release()
            logger.warning("sip call %s refused: %s", public_id, exc)
            self.sender.answer(request, response(request, 503, "No RTP port free", local_tag), addr)
            raise
        media = SipMedia(request.call_id, sock, negotiated, settings.rtp_timeout_s)
        ok = response(request, 200, to_tag=local_tag)
        ok.headers += [
            ("Contact", self.contact(addr)),
            ("Allow", ALLOW),
            ("Server", settings.user_agent),
            ("Content-Type", "application/sdp"),
        ]
        origin = (secrets.randbelow(2**31), 1)
        ok.body = answer(negotiated, settings.host, media.port, origin=origin)
        dialog = Dialog(request.call_id, public_id, local_tag, request, addr, media, ok.to_bytes(), sdp_origin=origin)
        self._dialogs[request.call_id] = dialog
        self.phone_calls.add(public_id, SIP, media)  # a fresh random id: never in use
        self.sender.answer(request, ok, addr)
        logger.info(
            "sip call %s (SIP Call-ID %s) answered: %s from %s, RTP port %d",
            public_id,
            request.call_id,
            negotiated.audio.encoding.upper(),
            addr,
            media.port,
        )
        dialog.tasks = [
            asyncio.create_task(self._run(dialog, admission), name=f"sip-{public_id}-call"),
            asyncio.create_task(self._resend_ok(dialog), name=f"sip-{public_id}-200"),
        ]
        return dialog

    def contact(self, addr: Address) -> str:
        return f"<sip:{self.sender.hostport()}{';transport=tcp' if addr.transport == 'tcp' else ''}>"

    def _bye(self, request: SipMessage, addr: Address) -> None:
        dialog = self._dialogs.get(request.call_id)
        if dialog is None or tag_of(request.header("To")) != dialog.local_tag:
            self.sender.answer(request, response(request, 481), addr)
            return
        dialog.remote_ended = True
        dialog.acked.set()  # a BYE confirms the dialog as well as an ACK would
        self.sender.answer(request, response(request, 200), addr)
        logger.info("sip call %s: the caller hung up", dialog.public_id)
        dialog.media.hang_up()

    def _cancel(self, request: SipMessage, addr: Address) -> None:
        if self.control.cancel(request, addr):
            return  # a ringing call: 200 to the CANCEL, 487 to its INVITE
        dialog = self._dialogs.get(request.call_id)
        if dialog is None or dialog.invite.branch != request.branch:
            self.sender.answer(request, response(request, 481), addr)
            return
        # An answered INVITE: a CANCEL after the 200 OK changes nothing (RFC 3261 section
        # 9.2); the caller ends the call with BYE.
        self.sender.answer(request, response(request, 200), addr)

    def _notify(self, request: SipMessage, addr: Address) -> None:
        """The progress of a transfer the caller accepted (RFC 3515): logged; once the
        target answered (2xx), the agent's leg is hung up."""
        dialog = self._dialogs.get(request.call_id)
        if dialog is None or tag_of(request.header("To")) != dialog.local_tag:
            self.sender.answer(request, response(request, 481), addr)
            return
        self.sender.answer(request, response(request, 200), addr)
        self.control.transfer_progress(dialog, request)

    # --- the call's lifetime -------------------------------------------------------------

    async def _run(self, dialog: Dialog, admission: Admission) -> None:
        try:
            with admission:
                await dialog.media.run(admission.session)
        except Exception:
            logger.exception("sip call %s failed", dialog.public_id)
        finally:
            for task in dialog.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            self._dialogs.pop(dialog.call_id, None)
            self.phone_calls.remove(dialog.public_id, dialog.media)
            if not dialog.remote_ended:
                bye = asyncio.create_task(self._send_bye(dialog), name=f"sip-{dialog.public_id}-bye")
                self._tasks.add(bye)
                bye.add_done_callback(self._tasks.discard)

    async def _resend_ok(self, dialog: Dialog) -> None:
        interval, deadline = T1, time.monotonic() + TRANSACTION_S
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dialog.acked.wait(), interval)
                return
            self.sender.send(dialog.ok, dialog.remote)
            interval = min(interval * 2, 4.0)
        logger.warning("sip call %s: no ACK for the 200 OK in %g s: hanging up", dialog.public_id, TRANSACTION_S)
        dialog.media.hang_up()

    async def _send_bye(self, dialog: Dialog) -> None:
        logger.info("sip call %s: hanging up (BYE)", dialog.public_id)
        bye = dialog.request("BYE", self.sender, self.settings.user_agent, [])
        if await self.transactions.send(bye, dialog.remote, BYE_TIMEOUT_S) is None:
            logger.info("sip call %s: no answer to our BYE", dialog.public_id)
