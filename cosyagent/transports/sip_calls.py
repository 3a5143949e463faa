"""The call-control API of the SIP endpoint: accept, reject, refer and hangup.

Ringing calls (call control on, :mod:`.sip_control`) wait here for the webhook's decision:
:meth:`SipCalls.accept` answers one with a session configured by the request (the phone
leg's codec always wins), :meth:`SipCalls.reject` refuses it (603 by default). An answered
call can be transferred (:meth:`SipCalls.refer`: a REFER in the dialog, RFC 3515; the
caller's NOTIFYs are logged by the server) or hung up (:meth:`SipCalls.hang_up`: BYE); once
answered, it is a live call of :class:`~cosyagent.transports.phone_calls.PhoneCalls` (the
sideband finds it there). Every
method raises a :class:`~cosyagent.transports.webrtc_offer.CallError` the HTTP layer turns
into the error response: 404 ``call_not_found`` for an id no call has (or had, and ended).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httpx

from cosyagent.runtime.sessions import SessionConfigError, SessionRefused
from cosyagent.transports.media_stream import session_config
from cosyagent.transports.rtp import PortRangeExhausted
from cosyagent.transports.sdp import Negotiated
from cosyagent.transports.sip_control import (
    CallControl,
    CallStateError,
    RingingCall,
    WebhookError,
    incoming_event,
    new_call_id,
    post_event,
    refer_target,
    reject_status,
)
from cosyagent.transports.sip_dialog import Dialog, sipfrag_status
from cosyagent.transports.sip_message import SipMessage, new_tag, response
from cosyagent.transports.sip_tcp import Address
from cosyagent.transports.webrtc_offer import CallError, CallLimitError, CallNotFound

if TYPE_CHECKING:
    from cosyagent.transports.sip_server import SipServer

__all__ = ["CallControl", "SipCalls", "phone_session"]

logger = logging.getLogger(__name__)

REFER_TIMEOUT_S = 8.0


class SipCalls:
    """The calls of one :class:`~cosyagent.transports.sip_server.SipServer`, by their API id."""

    def __init__(self, server: SipServer, control: CallControl | None) -> None:
        self._server = server
        self._control = control if control is not None and control.webhook_url else None
        self._ringing: dict[str, RingingCall] = {}  # by API id
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # a decided call's webhook POST may still run

    @property
    def enabled(self) -> bool:
        """Calls ring until accepted (a webhook is configured)."""
        return self._control is not None

    @property
    def ringing(self) -> list[str]:
        return list(self._ringing)

    async def close(self) -> None:
        """Shutdown: every ringing call is refused (503) and the webhook client closed."""
        tasks = list(self._tasks)
        for ring in list(self._ringing.values()):
            self._final(ring, 503, "The server is shutting down")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- ringing (the server's side) -----------------------------------------------------

    def ring(self, invite: SipMessage, addr: Address, negotiated: Negotiated) -> None:
        """Ring (180) and ask the webhook; the call waits for accept or reject."""
        if self._control is None:
            raise RuntimeError("call control is off: the call is answered at once")
        local_tag = new_tag()
        ringing_response = response(invite, 180, to_tag=local_tag)
        ringing_response.headers.append(("Contact", self._server.contact(addr)))  # an early dialog's
        ringing = ringing_response.to_bytes()
        ring = RingingCall(new_call_id(), invite, addr, negotiated, local_tag, ringing)
        self._ringing[ring.public_id] = ring
        self._server.sender.send(ringing, addr)
        logger.info(
            "sip call %s (SIP Call-ID %s) from %s rings: asking the webhook", ring.public_id, invite.call_id, addr
        )
        ring.task = asyncio.create_task(self._decide(ring, self._control), name=f"sip-{ring.public_id}-ring")
        self._tasks.add(ring.task)
        ring.task.add_done_callback(self._tasks.discard)

    def ringing_again(self, invite: SipMessage, addr: Address) -> bool:
        """A retransmitted INVITE of a ringing call: it rings again (True)."""
        ring = self._by_invite(invite)
        if ring is not None:
            self._server.sender.send(ring.ringing, addr)
        return ring is not None

    def cancel(self, request: SipMessage, addr: Address) -> bool:
        """A CANCEL of a ringing call (True): 200 to it, 487 to the INVITE."""
        ring = self._by_invite(request)
        if ring is None:
            return False
        self._server.sender.answer(request, response(request, 200), addr)
        logger.info("sip call %s: the caller gave up while it rang (CANCEL)", ring.public_id)
        self._final(ring, 487, None)
        return True

    async def _decide(self, ring: RingingCall, control: CallControl) -> None:
        """The webhook's POST and the wait for a decision share one deadline."""
        timeout_s = control.accept_timeout_s
        posted = False
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    event = incoming_event(ring.public_id, ring.invite)
                    await post_event(self._http(), control, event, timeout_s + 1.0)
                except WebhookError as exc:
                    if not ring.decided.is_set():
                        logger.warning("sip call %s refused with %d: %s", ring.public_id, exc.sip_status, exc.reason)
                        self._final(ring, exc.sip_status, exc.reason)
                    return
                posted = True
                await ring.decided.wait()
        except TimeoutError:
            if not ring.decided.is_set():
                what = "no accept or reject" if posted else "the webhook did not answer"
                logger.warning("sip call %s refused with 480: %s in %g s", ring.public_id, what, timeout_s)
                self._final(ring, 480, f"{what[0].upper()}{what[1:]} in {timeout_s:g} s")

    def _final(self, ring: RingingCall, status: int, reason: str | None) -> None:
        ring.decided.set()
        self._ringing.pop(ring.public_id, None)
        self._server.sender.answer(ring.invite, response(ring.invite, status, reason, ring.local_tag), ring.addr)

    def _by_invite(self, request: SipMessage) -> RingingCall | None:
        return next(
            (
                ring
                for ring in self._ringing.values()
                if ring.invite.call_id == request.call_id and ring.invite.branch == request.branch
            ),
            None,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    # --- the API -------------------------------------------------------------------------

    def knows(self, call_id: str) -> bool:
        """A call of this endpoint, ringing or answered."""
        return call_id in self._ringing or self._server.dialog(call_id) is not None

    def accept(self, call_id: str, session: dict[str, Any]) -> None:
        """Answer a ringing call with ``session`` (a session.update body, plus ``model``)."""
        ring = self._ringing.get(call_id)
        if ring is None:
            raise self._not_ringing(call_id)
        model = session.get("model")
        try:
            self._server.answer_call(
                call_id,
                ring.invite,
                ring.addr,
                ring.negotiated,
                ring.local_tag,
                model if isinstance(model, str) and model else None,
                session,
            )
        except SessionConfigError as exc:  # the call keeps ringing: a corrected accept may follow
            raise CallError(exc.message, code=exc.code, param=exc.param) from exc
        except SessionRefused as exc:
            self._decided(ring)
            raise CallLimitError(f"{exc.message}: the call was refused (503)", code=exc.code) from exc
        except (PortRangeExhausted, OSError) as exc:
            self._decided(ring)
            raise CallError(
                f"no RTP port free ({exc}): the call was refused (503)", code="no_rtp_port", status=503
            ) from exc
        self._decided(ring)

    def reject(self, call_id: str, status_code: int | None) -> None:
        ring = self._ringing.get(call_id)
        if ring is None:
            raise self._not_ringing(call_id)
        status = reject_status(status_code)
        logger.info("sip call %s rejected with %d by the API", call_id, status)
        self._final(ring, status, None)

    async def refer(self, call_id: str, target_uri: object) -> None:
        """Send REFER; returns once the caller accepted it (2xx). The transfer's progress
        (the caller's NOTIFYs) is logged by the server."""
        target = refer_target(target_uri)
        dialog = self._server.dialog(call_id)
        if dialog is None:
            raise self.not_answered(call_id, "transferred")
        sender = self._server.sender
        contact = f"<sip:{sender.hostport()}>"
        refer = dialog.request(
            "REFER",
            sender,
            self._server.settings.user_agent,
            [("Refer-To", f"<{target}>"), ("Referred-By", contact), ("Contact", contact)],
        )
        dialog.transfer_to = target
        logger.info("sip call %s: REFER to %s", call_id, target)
        answer = await self._server.transactions.send(refer, dialog.remote, REFER_TIMEOUT_S)
        if answer is None:
            raise CallError(
                f"the caller did not answer the REFER in {REFER_TIMEOUT_S:g} s", code="refer_timeout", status=504
            )
        if not 200 <= answer.status < 300:
            logger.warning("sip call %s: the caller refused the transfer: %d %s", call_id, answer.status, answer.reason)
            raise CallError(
                f"the caller refused the transfer: SIP {answer.status} {answer.reason}",
                code="refer_rejected",
                status=502,
            )
        logger.info("sip call %s: the caller took the transfer (%d %s)", call_id, answer.status, answer.reason)

    async def hang_up(self, call_id: str) -> None:
        """End a call: 603 when ringing; when answered, BYE (returns once its session has ended)."""
        ring = self._ringing.get(call_id)
        if ring is not None:
            logger.info("sip call %s hung up by the API while it rang: 603", call_id)
            self._final(ring, 603, None)
            return
        await self._server.phone_calls.hang_up(call_id)  # its session ends: the server sends BYE

    def transfer_progress(self, dialog: Dialog, request: SipMessage) -> None:
        """A NOTIFY in an answered call (RFC 3515): the transfer's progress, logged; once the
        target answered (2xx), the agent's leg is hung up."""
        event = (request.header("Event") or "").split(";")[0].strip().lower()
        status = sipfrag_status(request.body) if event == "refer" else None
        if status is None:
            logger.info("sip call %s: NOTIFY (%s) without a transfer status", dialog.public_id, event or "no Event")
            return
        code, line = status
        state = request.header("Subscription-State") or "?"
        logger.info("sip call %s: transfer to %s: %s (%s)", dialog.public_id, dialog.transfer_to or "?", line, state)
        if 200 <= code < 300:
            logger.info("sip call %s: transferred; hanging up the agent's leg", dialog.public_id)
            dialog.media.hang_up()
        elif code >= 300:
            logger.warning("sip call %s: the transfer failed (%s); the call goes on", dialog.public_id, line)

    def _decided(self, ring: RingingCall) -> None:
        ring.decided.set()
        self._ringing.pop(ring.public_id, None)

    def _not_ringing(self, call_id: str) -> CallError:
        if self._server.dialog(call_id) is not None:
            return CallStateError(f"call {call_id!r} was already accepted", code="call_already_accepted")
        return CallNotFound(f"no ringing call {call_id!r}: it ended or never existed")

    def not_answered(self, call_id: str, what: str) -> CallError:
        """The error for a call that is not answered: 409 while it rings, else 404."""
        if call_id in self._ringing:
            return CallStateError(f"call {call_id!r} is still ringing: accept it before it can be {what}")
        return CallNotFound(f"no call {call_id!r}: it ended or never existed")


def phone_session(session: dict[str, Any] | None, negotiated: Negotiated) -> dict[str, Any]:
    """The accepted session configuration with the phone leg's codec both ways (the codec is
    the SDP's to choose, not the client's)."""
    phone = session_config(negotiated.audio)
    if not session:
        return phone
    merged = {key: value for key, value in session.items() if key != "model"}
    given = merged.get("audio")
    audio: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    for way in ("input", "output"):
        part = audio.get(way)
        audio[way] = {**(part if isinstance(part, dict) else {}), "format": phone["audio"][way]["format"]}
    merged["audio"] = audio
    return merged
