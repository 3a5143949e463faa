"""Phone calls over the native SIP endpoint, against the real server and the real embedded
models, on 127.0.0.1 only: Debian's baresip (tests/e2e/baresip_caller.py) dials in, plays a
real 8 kHz speech clip as its microphone and records what the agent says; Whisper listens to
the recording. A raw-socket SIP test peer (real UDP, here) sends what no phone would: garbage,
malformed and oversized messages, retransmissions, an offer without a common codec, a call
that never sends audio."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cosyagent.audio.pcm import float_to_pcm16, resample, ulaw_encode
from cosyagent.config import SipConfig, load_config
from cosyagent.runtime import Runtime
from cosyagent.runtime.sessions import SessionRefused
from cosyagent.transports.rtp import RtpPacket, parse_rtp
from cosyagent.transports.sip_call import MAX_CATCH_UP_S
from cosyagent.transports.sip_message import SipMessage, parse, response
from cosyagent.transports.sip_server import SipServer
from cosyagent.web.app import create_app
from tests.e2e.baresip_caller import BARESIP, baresip_phone, microphone_wav
from tests.e2e.conftest import LiveServer, configured, free_port, free_port_both, serve_asgi
from tests.support import read_clip

RTP_RANGE = (31000, 31999)
RTP_TIMEOUT_S = 4.0


@dataclasses.dataclass
class SipLive:
    server: LiveServer
    sip: SipServer


@pytest.fixture(scope="module")
async def sip_live() -> AsyncIterator[SipLive]:
    config = load_config()
    server = dataclasses.replace(config.server, capacity=config.server.max_sessions)
    sip = SipConfig(
        enabled=True,
        port=free_port_both(),
        rtp_port_min=RTP_RANGE[0],
        rtp_port_max=RTP_RANGE[1],
        rtp_timeout_s=RTP_TIMEOUT_S,
        transports=("udp", "tcp"),
    )
    runtime = Runtime.from_config(dataclasses.replace(config, server=server, sip=sip))
    app = create_app(runtime)
    port = free_port()
    async with serve_asgi(app, port):
        yield SipLive(LiveServer(runtime, port), app.state.sip_server)


class SipTestPeer:
    """A SIP peer of our own on a real UDP socket: sends raw datagrams, reads answers."""

    def __init__(self, server_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.server = ("127.0.0.1", server_port)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    async def receive(self, timeout_s: float = 5.0) -> SipMessage | None:
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout_s)
        except TimeoutError:
            return None
        return parse(data)

    async def final(self, timeout_s: float = 5.0) -> SipMessage:
        """The next final (>= 200) response or request."""
        while True:
            message = await self.receive(timeout_s)
            assert message is not None, "no answer"
            if message.is_request or message.status >= 200:
                return message

    def request(self, method: str, call_id: str, cseq: int, branch: str, body: str = "", **extra: str) -> bytes:
        headers = {
            "Via": f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch};rport",
            "Max-Forwards": "70",
            "From": "<sip:peer@127.0.0.1>;tag=peer1",
            "To": "<sip:agent@127.0.0.1>",
            "Call-ID": call_id,
            "CSeq": f"{cseq} {method}",
            "Contact": f"<sip:peer@127.0.0.1:{self.port}>",
        }
        if body:
            headers["Content-Type"] = "application/sdp"
        headers.update(extra)
        lines = [f"{method} sip:agent@127.0.0.1 SIP/2.0", *(f"{k}: {v}" for k, v in headers.items())]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def close(self) -> None:
        self.sock.close()


def offer(rtp_port: int, formats: str = "0 8 101") -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {formats}\r\na=rtpmap:101 telephone-event/8000\r\n"
    )


async def wait_until_free(live: SipLive, before: int) -> None:
    for _ in range(100):
        if live.server.runtime.active_sessions == before and not live.sip.calls:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{live.server.runtime.active_sessions} sessions, {len(live.sip.calls)} calls still live")


def rtp_port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def malformed_datagrams_are_answered_or_dropped(live: SipLive) -> None:
    """Each bad datagram is answered with a precise 400/513 or dropped; none disturbs a call."""
    peer = SipTestPeer(live.sip.port)
    try:
        dropped = live.sip.dropped
        peer.send(b"\x00\xff\xfe\x00 not SIP at all")
        peer.send(peer.request("OPTIONS", "bad-1", 1, "b1").replace(b"Call-ID: bad-1\r\n", b""))
        peer.send(b"x" * 65000)
        peer.send(peer.request("OPTIONS", "bad-2", 1, "b2", **{"CSeq": "1 INVITE"}))
        mismatch = await peer.final()
        assert (mismatch.status, mismatch.reason) == (400, "CSeq method does not match the request")
        assert mismatch.call_id == "bad-2"
        peer.send(peer.request("OPTIONS", "bad-3", 1, "b3", Subject="y" * 9000))
        too_large = await peer.final()
        assert (too_large.status, too_large.call_id) == (513, "bad-3")
        peer.send(peer.request("FROB", "bad-4", 1, "b4"))
        assert (await peer.final()).status == 501
        peer.send(peer.request("REGISTER", "bad-5", 1, "b5"))
        assert (await peer.final()).status == 405
        peer.send(peer.request("OPTIONS", "ok-1", 1, "o1"))
        options = await peer.final()
        assert options.status == 200 and "INVITE" in (options.header("Allow") or "")
        assert options.header("Accept") == "application/sdp"
        assert live.sip.dropped == dropped + 3  # garbage, no Call-ID, 65 kB
    finally:
        peer.close()


@pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (make test installs baresip-core)")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_calls_and_hears_the_agent(
    sip_live: SipLive, tmp_path: Path, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = sip_live.server.runtime.active_sessions
    microphone = tmp_path / "mic.wav"
    microphone_wav(microphone, "en_dublin_q.wav", trailing_silence_s=60)
    home = tmp_path / "baresip"
    home.mkdir()
    async with baresip_phone(home, microphone) as phone:
        await phone.command("dial", f"sip:agent@127.0.0.1:{sip_live.sip.port};transport={transport}")
        await phone.wait_for("CALL_ESTABLISHED", 20)
        assert len(sip_live.sip.calls) == 1
        call = sip_live.sip.calls[0]
        if transport == "udp":
            await malformed_datagrams_are_answered_or_dropped(sip_live)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not (call.replies_done and not call.sending):
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # the last packets reach baresip
        assert call.packets_sent > 25, f"no reply audio sent: {phone.log()[-3000:]}"
        assert call.packets_received > 100 and call.foreign_packets == 0
        port = call.port
        await phone.command("hangup")
        await phone.wait_for("CALL_CLOSED", 10)
    await wait_until_free(sip_live, before)
    assert rtp_port_is_free(port)

    assert any("the caller hung up" in r.getMessage() for r in caplog.records)
    assert any(f"answered: PCMU from {transport} 127.0.0.1" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "session error" in r.getMessage()]
    reply = phone.recording()
    voiced = np.abs(reply) > 0.02
    assert voiced.sum() / 8000 >= 0.3, f"recording of {reply.size / 8000:.1f} s is silent"
    heard = await sip_live.server.runtime.asr.transcribe(resample(reply, 8000, 16000))
    assert re.findall(r"[A-Za-z]{2,}", heard.text), heard.text


@pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (make test installs baresip-core)")
async def test_with_greet_phone_calls_a_silent_caller_hears_a_greeting(sip_live: SipLive, tmp_path: Path) -> None:
    """``realtime.greet_phone_calls``: baresip dials in and says nothing; the agent opens the call."""
    runtime, before = sip_live.server.runtime, sip_live.server.runtime.active_sessions
    microphone = tmp_path / "mic.wav"
    sf.write(microphone, np.zeros(8000 * 60, np.float32), 8000, subtype="PCM_16")
    home = tmp_path / "baresip"
    home.mkdir()
    with configured(runtime, "realtime", greet_phone_calls=True):
        async with baresip_phone(home, microphone) as phone:
            await phone.command("dial", f"sip:agent@127.0.0.1:{sip_live.sip.port}")
            await phone.wait_for("CALL_ESTABLISHED", 20)
            call = sip_live.sip.calls[0]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (call.replies_done and not call.sending):
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # the last packets reach baresip
            await phone.command("hangup")
            await phone.wait_for("CALL_CLOSED", 10)
    await wait_until_free(sip_live, before)
    assert call.replies_done == 1, f"no greeting: {phone.log()[-3000:]}"
    heard = await runtime.asr.transcribe(resample(phone.recording(), 8000, 16000))
    words = set(re.findall(r"[a-z']+", heard.text.lower()))
    assert words & {"hello", "hi", "hey", "welcome", "greetings"}, heard.text


def dtmf_packet(sequence: int, timestamp: int, digit: int, end: bool) -> bytes:
    payload = bytes([digit, 0x8A if end else 0x0A, 0x01, 0x40])
    return RtpPacket(101, sequence, timestamp, 0x5EED, payload).to_bytes()


async def test_the_dialog_rules_and_a_silent_caller_is_hung_up_with_bye(
    sip_live: SipLive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = sip_live.server.runtime.active_sessions
    peer = SipTestPeer(sip_live.sip.port)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    rtp_port = int(rtp.getsockname()[1])
    try:
        # No common codec: 488 with the reason, and no session.
        peer.send(peer.request("INVITE", "peer-488", 1, "i0", offer(rtp_port, "18 3 101")))  # G.729, GSM
        refused = await peer.final()
        assert (refused.status, refused.reason) == (488, "No common codec: only G722, PCMU, PCMA over RTP/AVP")
        assert sip_live.server.runtime.active_sessions == before

        invite = peer.request("INVITE", "peer-1", 1, "i1", offer(rtp_port, "8 101"))
        peer.send(invite)
        trying = await peer.receive()
        assert trying is not None and trying.status == 100
        ok = await peer.final()
        assert ok.status == 200 and ok.header("Content-Type") == "application/sdp"
        assert "a=rtpmap:8 PCMA/8000" in ok.body.decode() and "telephone-event/8000" in ok.body.decode()
        server_rtp = int(re.findall(r"m=audio (\d+)", ok.body.decode())[0])
        peer.send(invite)  # a retransmission: answered again, no second session
        again = await peer.final()
        assert again.to_bytes() == ok.to_bytes()
        assert len(sip_live.sip.calls) == 1
        to_header = ok.header("To") or ""
        peer.send(peer.request("ACK", "peer-1", 1, "a1", To=to_header))
        peer.send(peer.request("CANCEL", "peer-1", 1, "i1"))  # after the answer: 200, nothing changes
        assert (await peer.final()).status == 200
        peer.send(peer.request("BYE", "peer-1", 2, "b1", To="<sip:agent@127.0.0.1>;tag=wrong"))
        assert (await peer.final()).status == 481
        peer.send(peer.request("INVITE", "peer-1", 3, "i3", offer(rtp_port, "0"), To=to_header))
        assert (await peer.final()).status == 488  # re-INVITE

        call = sip_live.sip.calls[0]
        stranger.sendto(RtpPacket(8, 1, 160, 1, b"\xd5" * 160).to_bytes(), ("127.0.0.1", server_rtp))
        for sequence in range(3):
            rtp.sendto(
                RtpPacket(8, sequence, sequence * 160, 0x5EED, b"\xd5" * 160).to_bytes(), ("127.0.0.1", server_rtp)
            )
            await asyncio.sleep(0.02)
        for sequence, end in [(3, False), (4, False), (5, True), (6, True), (7, True)]:
            rtp.sendto(dtmf_packet(sequence, 480, 5, end), ("127.0.0.1", server_rtp))
        # Then silence on the line: the server hangs up after sip.rtp_timeout_s, with a BYE.
        bye = await peer.final(RTP_TIMEOUT_S + 5)
        assert bye.method == "BYE" and bye.call_id == "peer-1" and bye.cseq == (1, "BYE")
        assert "tag=peer1" in (bye.header("To") or "") and to_header.split(";tag=")[1] in (bye.header("From") or "")
        peer.send(response(bye, 200).to_bytes())
        await wait_until_free(sip_live, before)
        assert rtp_port_is_free(server_rtp)
        assert call.foreign_packets == 1 and call.packets_received == 8
    finally:
        for sock in (rtp, stranger):
            sock.close()
        peer.close()
    keys = [r.getMessage() for r in caplog.records if ": key " in r.getMessage()]
    assert keys == ["sip call peer-1: key 5"]
    assert not [r for r in caplog.records if "session error" in r.getMessage()]  # the [DTMF 5] item was taken
    assert any("no RTP for" in r.getMessage() for r in caplog.records)


class RtpPeer:
    """The test peer's RTP: sends 20 ms μ-law packets in real time, keeps every packet heard."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.heard: list[tuple[float, RtpPacket]] = []
        self.server: tuple[str, int] | None = None
        self._sequence = 0

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 2048)
            self.heard.append((time.monotonic(), parse_rtp(data)))

    async def speak(self, mulaw: bytes) -> None:
        assert self.server is not None
        start = time.monotonic()
        for index in range(0, len(mulaw), 160):
            packet = RtpPacket(0, self._sequence, self._sequence * 160, 0xCA11, mulaw[index : index + 160])
            self.sock.sendto(packet.to_bytes(), self.server)
            self._sequence += 1
            await asyncio.sleep(max(0.0, start + (index // 160 + 1) * 0.02 - time.monotonic()))


def mulaw_clip(name: str) -> bytes:
    return ulaw_encode(np.frombuffer(float_to_pcm16(read_clip(name, 8000)), dtype="<i2"))


async def test_speaking_over_the_reply_stops_its_rtp(sip_live: SipLive, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = sip_live.server.runtime.active_sessions
    peer, rtp = SipTestPeer(sip_live.sip.port), RtpPeer()
    listener = asyncio.create_task(rtp.listen())
    silence = b"\xff" * 160
    try:
        peer.send(peer.request("INVITE", "peer-barge", 1, "j1", offer(rtp.port, "0")))
        ok = await peer.final()
        assert ok.status == 200
        rtp.server = ("127.0.0.1", int(re.findall(r"m=audio (\d+)", ok.body.decode())[0]))
        peer.send(peer.request("ACK", "peer-barge", 1, "k1", To=ok.header("To") or ""))
        await rtp.speak(mulaw_clip("en_dublin_q.wav") + silence * 25)
        deadline = time.monotonic() + 150
        while not rtp.heard and time.monotonic() < deadline:
            await rtp.speak(silence * 5)
        assert rtp.heard, "no reply audio"
        call = sip_live.sip.calls[0]
        await rtp.speak(silence * 20)  # some of the reply plays
        interrupted_at = time.monotonic()
        await rtp.speak(mulaw_clip("en_news_movement_8k.wav")[: 8000 * 3] + silence * 50)
        peer.send(peer.request("BYE", "peer-barge", 2, "l1", To=ok.header("To") or ""))
        assert (await peer.final()).status == 200
        await wait_until_free(sip_live, before)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        rtp.sock.close()
        peer.close()

    assert call.cleared_at, "speaking over the reply did not clear it"
    cleared_at = call.cleared_at[0]
    # Sanity bound only (a shared 2-core CPU); latency is measured in benchmarks/.
    assert cleared_at - interrupted_at < 3.0
    # The reply stops at once: the first packet after the clear (loopback) starts a new talkspurt.
    later = [p for at, p in rtp.heard if at > cleared_at + 0.06]
    assert not later or later[0].marker
    # The reply's packets: one stream (SSRC), consecutive sequence numbers, 160 samples apart
    # within a talkspurt, the marker bit on the first packet.
    first_reply = [at for at, _ in rtp.heard if at < cleared_at]
    packets = [p for _, p in rtp.heard]
    assert len({p.ssrc for p in packets}) == 1 and packets[0].marker
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(packets))
    assert all(b.timestamp - a.timestamp == 160 for a, b in itertools.pairwise(packets) if not b.marker)
    # Real time, not faster: a packet may leave late (a stalled event loop on a shared CPU;
    # the first one up to MAX_CATCH_UP_S late), never early.
    assert first_reply[-1] - first_reply[0] >= 0.02 * (len(first_reply) - 1) - MAX_CATCH_UP_S - 0.02
    assert not [r for r in caplog.records if "session error" in r.getMessage()]


async def test_a_call_past_capacity_gets_503_and_no_rtp_port(sip_live: SipLive) -> None:
    runtime = sip_live.server.runtime
    held = []
    try:
        while True:  # take every slot the server admits, as live calls would
            try:
                held.append(runtime.sessions.admit("sip", model=None))
            except SessionRefused:
                break
        peer = SipTestPeer(sip_live.sip.port)
        try:
            peer.send(peer.request("INVITE", "peer-full", 1, "f1", offer(4000, "0")))
            busy = await peer.final()
        finally:
            peer.close()
    finally:
        for admission in held:
            admission.release()
    assert busy.status == 503 and busy.header("Retry-After") == "5"
    assert busy.reason == f"the server is at its limit of {len(held)} sessions"
    assert not sip_live.sip.calls and rtp_port_is_free(RTP_RANGE[0])


async def test_sip_over_tcp_frames_by_content_length_and_closes_on_oversized_messages(sip_live: SipLive) -> None:
    peer = SipTestPeer(sip_live.sip.port)  # for its request builder; the messages go over TCP
    reader, writer = await asyncio.open_connection("127.0.0.1", sip_live.sip.port)
    try:
        options = peer.request("OPTIONS", "tcp-1", 1, "t1").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        bad = peer.request("OPTIONS", "tcp-2", 1, "t2", CSeq="1 BYE")
        writer.write(b"\r\n\r\n" + options + bad)  # a keep-alive, then two messages in one segment
        await writer.drain()
        answers = []
        for _ in range(2):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            answers.append(parse(head))
        assert [(a.call_id, a.status) for a in answers] == [("tcp-1", 200), ("tcp-2", 400)]
        assert answers[0].header("Via") == parse(options).header("Via")  # copied exactly
        writer.write(peer.request("OPTIONS", "tcp-3", 1, "t3", Subject="z" * 9000))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed: the stream cannot be resynchronized
    finally:
        writer.close()
        peer.close()
