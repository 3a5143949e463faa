"""re-INVITEs in an answered SIP call (hold, resume, a new RTP address, what is refused), from
the raw-socket peer of test_sip_calls over real UDP, against the real server. baresip's own
hold and resume are in test_sip_call_control."""

from __future__ import annotations

import re

from cosyagent.transports.sip_message import SipMessage
from tests.e2e.test_sip_calls import SipLive, SipTestPeer, offer, sip_live, wait_until_free

__all__ = ["sip_live"]  # the fixture, imported for this module


def direction(answer: SipMessage) -> str:
    found = re.findall(r"a=(sendrecv|sendonly|recvonly|inactive)", answer.body.decode())
    return found[0] if len(found) == 1 else f"{found}"


def version(answer: SipMessage) -> int:
    return int(re.findall(r"o=cosyagent \d+ (\d+) ", answer.body.decode())[0])


async def test_hold_resume_and_refused_reinvites(sip_live: SipLive) -> None:
    before = sip_live.server.runtime.active_sessions
    peer = SipTestPeer(sip_live.sip.port)
    try:
        peer.send(peer.request("INVITE", "re-1", 1, "r1", offer(4000, "0 101")))
        ok = await peer.final()
        assert ok.status == 200 and direction(ok) == "sendrecv" and version(ok) == 1
        to_header = ok.header("To") or ""
        peer.send(peer.request("ACK", "re-1", 1, "r1a", To=to_header))
        call = sip_live.sip.calls[0]

        async def reinvite(cseq: int, body: str) -> SipMessage:
            peer.send(peer.request("INVITE", "re-1", cseq, f"r{cseq}", body, To=to_header))
            answer = await peer.final()
            if answer.status == 200:
                peer.send(peer.request("ACK", "re-1", cseq, f"r{cseq}a", To=to_header))
            return answer

        held = await reinvite(2, offer(4000, "0 101") + "a=sendonly\r\n")
        assert (held.status, direction(held), version(held)) == (200, "recvonly", 2) and call.on_hold
        resumed = await reinvite(3, offer(4002, "0 101") + "a=sendrecv\r\n")  # and a new RTP port
        assert (resumed.status, direction(resumed)) == (200, "sendrecv") and not call.on_hold
        inactive = await reinvite(4, offer(4002, "0 101").replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n"))
        assert (inactive.status, direction(inactive)) == (200, "inactive") and call.on_hold
        old_style = await reinvite(5, offer(4002, "0 101").replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
        assert (old_style.status, direction(old_style)) == (200, "recvonly") and call.on_hold  # RFC 2543 hold
        await reinvite(6, offer(4002, "0 101"))
        assert not call.on_hold

        codec = await reinvite(7, offer(4002, "8"))
        assert (codec.status, codec.reason) == (488, "A codec change is not supported")
        empty = await reinvite(8, "")
        assert (empty.status, empty.reason) == (488, "A re-INVITE needs an SDP offer")
        peer.send(peer.request("INVITE", "re-1", 9, "r9", offer(4002), To="<sip:agent@127.0.0.1>;tag=other"))
        assert (await peer.final()).status == 481  # not this dialog
        assert len(sip_live.sip.calls) == 1 and not call.on_hold

        peer.send(peer.request("BYE", "re-1", 10, "r10", To=to_header))
        assert (await peer.final()).status == 200
    finally:
        peer.close()
    await wait_until_free(sip_live, before)
