"""An answered SIP call's dialog (RFC 3261 section 12): the re-INVITEs it answers (hold,
resume) and the requests the agent sends in it.

The agent sends BYE (it hangs up) and REFER (a transfer, RFC 3515) inside the dialog the
caller's INVITE set up: From is the INVITE's To with our tag, To is the caller's From, the
Request-URI the caller's Contact. Each is a client transaction: over UDP it is resent
(0.5 s, doubling to 4 s) until a final response arrives or its time is up; over TCP it is
sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from cosyagent.transports.sdp import ANSWER_DIRECTIONS, SIP_CODECS, SdpError, answer, negotiate, offered_direction
from cosyagent.transports.sip_call import SipMedia
from cosyagent.transports.sip_message import SipMessage, SipParseError, new_branch, response, uri_of
from cosyagent.transports.sip_sender import T1, SipSender
from cosyagent.transports.sip_tcp import Address


@dataclass
class Dialog:
    call_id: str  # the SIP Call-ID
    public_id: str  # the call's id in the HTTP API and the webhook
    local_tag: str
    invite: SipMessage
    remote: Address
    media: SipMedia
    ok: bytes  # the 200 OK, resent until the ACK
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    remote_ended: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cseq: int = 0  # of the requests the agent sends in this dialog
    transfer_to: str = ""  # the target of a REFER the caller accepted
    sdp_origin: tuple[int, int] = (0, 1)  # our SDP's session id and version (o= line)

    def request(self, method: str, sender: SipSender, user_agent: str, extra: list[tuple[str, str]]) -> SipMessage:
        """A new request of ours in this dialog (the next CSeq)."""
        self.cseq += 1
        invite = self.invite
        to_header = next(value for name, value in invite.headers if name == "To")
        via = f"SIP/2.0/{self.remote.transport.upper()} {sender.hostport()};branch={new_branch()};rport"
        return SipMessage(
            method=method,
            uri=uri_of(invite.header("Contact") or invite.header("From") or ""),
            headers=[
                ("Via", via),
                ("Max-Forwards", "70"),
                ("From", f"{to_header};tag={self.local_tag}"),
                ("To", invite.header("From") or ""),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self.cseq} {method}"),
                ("User-Agent", user_agent),
                *extra,
            ],
        )


class ClientTransactions:
    """The requests the agent sent and awaits a final response to, by (Call-ID, CSeq, method)."""

    def __init__(self, sender: SipSender) -> None:
        self._sender = sender
        self._waiting: dict[tuple[str, int, str], asyncio.Future[SipMessage]] = {}

    async def send(self, request: SipMessage, to: Address, timeout_s: float) -> SipMessage | None:
        """Send ``request`` (resent over UDP) and return its final response, or None when none
        came within ``timeout_s``. Cancel-safe: nothing is left waiting."""
        number, method = request.cseq
        key = (request.call_id, number, method)
        answered = self._waiting[key] = asyncio.get_running_loop().create_future()
        data = request.to_bytes()
        deadline = time.monotonic() + timeout_s
        interval = T1
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._sender.send(data, to)
                wait = left if to.transport == "tcp" else min(interval, left)
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(answered), wait)
                interval = min(interval * 2, 4.0)
            return None
        finally:
            self._waiting.pop(key, None)
            answered.cancel()

    def response_received(self, message: SipMessage) -> None:
        try:
            number, method = message.cseq
        except SipParseError:
            return
        answered = self._waiting.get((message.call_id, number, method))
        if answered is not None and not answered.done() and message.status >= 200:
            answered.set_result(message)


def reinvite(dialog: Dialog, request: SipMessage, host: str, contact: str) -> SipMessage:
    """The answer to a re-INVITE (RFC 3261 section 14): hold (the offer says sendonly or
    inactive: the answer says recvonly or inactive and the agent stops sending), resume
    (sendrecv), a new RTP address; 488 for a codec change or no SDP offer."""
    if not request.body:
        return response(request, 488, "A re-INVITE needs an SDP offer")
    current = dialog.media.audio.encoding  # kept whenever the new offer still has it
    try:
        negotiated = negotiate(request.body, (current, *(codec for codec in SIP_CODECS if codec != current)))
    except SdpError as exc:
        return response(request, 488, exc.reason)
    if negotiated.audio != dialog.media.audio:
        return response(request, 488, "A codec change is not supported")
    direction = offered_direction(request.body, negotiated.audio_index)
    dialog.media.renegotiate(negotiated, held=direction in ("sendonly", "inactive"))
    dialog.sdp_origin = (dialog.sdp_origin[0], dialog.sdp_origin[1] + 1)
    ok = response(request, 200)
    ok.headers += [("Contact", contact), ("Content-Type", "application/sdp")]
    ok.body = answer(negotiated, host, dialog.media.port, ANSWER_DIRECTIONS[direction], dialog.sdp_origin)
    return ok


def sipfrag_status(body: bytes) -> tuple[int, str] | None:
    """The status line of a NOTIFY's ``message/sipfrag`` body (RFC 3420): (code, whole line)."""
    line = body.decode("utf-8", "replace").strip().split("\n")[0].strip()
    parts = line.split(" ", 2)
    if len(parts) >= 2 and parts[0] == "SIP/2.0" and len(parts[1]) == 3 and parts[1].isdigit():
        return int(parts[1]), line
    return None
