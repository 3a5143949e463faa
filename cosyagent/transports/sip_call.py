"""One SIP call's media: its RTP socket and the Realtime session it feeds.

Caller audio arrives as RTP (20 ms a packet), is put back in order by a small
:class:`~cosyagent.transports.rtp.JitterBuffer` and goes to the session: G.711 untouched (the
session runs in ``audio/pcmu`` or ``audio/pcma``), G.722 decoded to 16 kHz PCM by the carrier
codec (:class:`~cosyagent.audio.carrier.CarrierCodec`; the session runs in ``audio/pcm``), and
the reply encoded back. G.722's RTP clock runs at 8000 per second (RFC 3551 section 4.5.2),
so its packets, like G.711's, are 160 bytes and 160 timestamp ticks apart. Packets from any
address but the one the caller's SDP named are dropped. RFC 4733 key presses become the user message
``[DTMF 5]``. Reply audio (the session's ``response.output_audio.delta`` events) is sent
as 20 ms packets paced in real time, the marker bit set on the first packet of each
talkspurt; nothing is sent between replies. A barge-in drops the unsent reply at once and
truncates the assistant item to what was sent. A call with no RTP for ``rtp_timeout_s``
ends (the server then sends BYE).

A server-side client may follow the call (``WS /v1/realtime?call_id=...``, the sideband):
:meth:`SipMedia.watch` gives it every event the session sends, :meth:`SipMedia.post` hands its
client events to the session, as if the caller's own client had sent them; a key press also
reaches it as OpenAI's SIP-only ``input_audio_buffer.dtmf_event_received``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable

from cosyagent.agent.events import Event
from cosyagent.agent.session import RealtimeSession, SendEvent
from cosyagent.audio.carrier import CarrierAudio, CarrierCodec
from cosyagent.transports.base import AudioSink
from cosyagent.transports.media_stream import dtmf_event, dtmf_item
from cosyagent.transports.phone_calls import FollowedCall, PhonePlayback
from cosyagent.transports.rtp import FRAME_SAMPLES, DtmfReceiver, JitterBuffer, RtpError, RtpPacket, parse_rtp
from cosyagent.transports.sdp import Negotiated

logger = logging.getLogger(__name__)

FRAME_S = 0.020
MAX_CATCH_UP_S = 0.1  # a burst after a stall of the event loop is at most this much audio
SessionFactory = Callable[[AudioSink, SendEvent], RealtimeSession]


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, call: SipMedia) -> None:
        self._call = call

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._call.rtp_received(data, (str(addr[0]), int(addr[1])))


class SipMedia(FollowedCall):
    """One call's RTP and session. :meth:`run` until the session ends; :meth:`hang_up`
    ends it from outside (the caller's BYE, the server stopping). Cancel-safe."""

    def __init__(self, call_id: str, sock: socket.socket, negotiated: Negotiated, rtp_timeout_s: float) -> None:
        super().__init__(f"sip call {call_id}")
        self.call_id = call_id
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._neg = negotiated
        self._audio: CarrierAudio = negotiated.audio
        self._codec = CarrierCodec(negotiated.audio)  # G.711: passes through; G.722: transcodes
        self._remote = (negotiated.address, negotiated.port)
        self._timeout_s = rtp_timeout_s
        self._session: RealtimeSession | None = None
        self._jitter = JitterBuffer()
        self._dtmf = DtmfReceiver()
        self._transport: asyncio.DatagramTransport | None = None
        self._last_rtp = time.monotonic()
        self._unsent = bytearray()  # reply audio not yet sent
        self._item: str | None = None
        self._received_ms = 0.0  # of the current item
        self._sent_ms = 0.0
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp_base = secrets.randbits(32)
        self._talking = False
        self.foreign_packets = 0
        self.bad_packets = 0
        self.packets_sent = 0
        self.packets_received = 0
        self.cleared_at: list[float] = []  # when each barge-in cleared the reply (monotonic)
        self.replies_done = 0  # responses the session finished (their audio may still be sending)
        self._held = False  # by the caller (re-INVITE)
        self._paused = False  # by speech over the reply, until it is confirmed or dropped

    async def run(self, make_session: SessionFactory) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _RtpProtocol(self), sock=self._sock)
        except BaseException:
            self._sock.close()
            raise
        self._transport = transport
        self._last_rtp = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        try:
            playback = PhonePlayback(hold=self._pause, resume=self._resume, clear=self._clear)
            session = self._session = make_session(playback, self._send)
            sid = session.core.session_id
            tasks.append(asyncio.create_task(self._pace(), name=f"{sid}-sip-rtp-sender"))
            tasks.append(asyncio.create_task(self._watch(), name=f"{sid}-sip-rtp-watchdog"))
            await session.run(self._inbox.get)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            transport.close()  # closes the socket: the port is free again
            self._followers.end()
            logger.info(
                "sip call %s ended: %d RTP packets in, %d out, %d from a foreign source, %d malformed",
                self.call_id,
                self.packets_received,
                self.packets_sent,
                self.foreign_packets,
                self.bad_packets,
            )

    @property
    def sending(self) -> bool:
        """Reply audio is waiting to be sent."""
        return bool(self._unsent)

    @property
    def audio(self) -> CarrierAudio:
        return self._audio

    @property
    def on_hold(self) -> bool:
        return self._held

    def renegotiate(self, negotiated: Negotiated, held: bool) -> None:
        """A re-INVITE with the same codec: the caller's RTP address and payload types may
        change. ``held`` (it asked for sendonly or inactive): the agent sends no RTP and its
        session hears nothing (no hold music taken for speech, no RTP timeout) until resumed;
        a reply in progress waits and goes on after the resume."""
        self._neg = negotiated
        if negotiated.address not in ("0.0.0.0", "::"):
            self._remote = (negotiated.address, negotiated.port)
        if held != self._held:
            logger.info("sip call %s: %s", self.call_id, "on hold: the agent stops sending" if held else "resumed")
        self._held = held
        self._last_rtp = time.monotonic()

    def close_unstarted(self) -> None:
        """Free the socket of a call whose session never ran."""
        self._sock.close()

    def rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self._remote:
            self.foreign_packets += 1
            if self.foreign_packets == 1:
                logger.warning(
                    "sip call %s: RTP from %s:%d, not the caller's %s:%d: dropped", self.call_id, *addr, *self._remote
                )
            return
        try:
            packet = parse_rtp(data)
        except RtpError as exc:
            self.bad_packets += 1
            logger.debug("sip call %s: dropped a datagram: %s", self.call_id, exc)
            return
        self._last_rtp = time.monotonic()
        self.packets_received += 1
        if self._held:
            return
        if packet.payload_type == self._neg.dtmf_payload_type:
            self._key(packet)
        elif packet.payload_type == self._neg.payload_type and self._session is not None:
            for payload in self._jitter.push(packet.sequence, packet.payload, self._audio.silence):
                self._session.append_audio(self._codec.decode(payload))
        else:
            self.bad_packets += 1

    def _key(self, packet: RtpPacket) -> None:
        try:
            digit = self._dtmf.receive(packet)
        except RtpError as exc:
            self.bad_packets += 1
            logger.debug("sip call %s: dropped a telephone-event: %s", self.call_id, exc)
            return
        if digit is not None:
            logger.info("sip call %s: key %s", self.call_id, digit)
            self._inbox.put_nowait(json.dumps(dtmf_item(digit)))
            self._followers.publish(dtmf_event(digit))  # for sideband clients (the session reads the item)

    async def _send(self, event: Event) -> None:
        self._followers.publish(event)
        kind = event.get("type")
        if kind == "error":
            logger.warning("sip call %s: session error: %s", self.call_id, event.get("error"))
        elif kind == "response.done":
            self.replies_done += 1
        elif kind == "response.output_audio.delta":
            item_id = str(event["item_id"])
            if item_id != self._item:
                self._item, self._received_ms, self._sent_ms = item_id, 0.0, 0.0
            self._queue(self._codec.encode(base64.b64decode(event["delta"])))
        elif kind == "response.output_audio.done" and event.get("item_id") == self._item:
            self._queue(self._codec.finish())  # what the encoder still held (G.722), padded to a packet

    def _queue(self, wire: bytes) -> None:
        self._unsent += wire
        self._received_ms += len(wire) / self._audio.bytes_per_ms

    def _pause(self) -> None:
        """Speech started over the reply: no more of it is sent until :meth:`_resume` or
        :meth:`_clear` (the caller hears the agent stop within one packet)."""
        self._paused = True

    def _resume(self) -> None:
        self._paused = False

    def _clear(self) -> None:
        """Barge-in: nothing more of the reply is sent; the item keeps what was."""
        self._paused = False
        self.cleared_at.append(time.monotonic())
        dropped_ms = len(self._unsent) / self._audio.bytes_per_ms
        self._unsent.clear()
        self._codec.finish()  # the cut reply's tail is not played
        logger.info("sip call %s: reply cleared (%d ms of it unsent)", self.call_id, dropped_ms)
        if self._item is not None and self._sent_ms < self._received_ms:
            truncate = {
                "type": "conversation.item.truncate",
                "item_id": self._item,
                "content_index": 0,
                "audio_end_ms": int(self._sent_ms),
            }
            logger.info("sip call %s: item %s truncated to the %d ms sent", self.call_id, self._item, self._sent_ms)
            self._inbox.put_nowait(json.dumps(truncate))
        self._item, self._received_ms, self._sent_ms = None, 0.0, 0.0

    async def _pace(self) -> None:
        """Send one 20 ms packet of reply audio per 20 ms of wall clock, while there is some.
        After a stall of the event loop, at most :data:`MAX_CATCH_UP_S` of packets go out at
        once; the clock skips the rest (the receiver sees a gap, then a new talkspurt)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        frame = self._audio.frame_bytes()
        while True:
            tick += 1
            late = loop.time() - (start + tick * FRAME_S)
            if late > MAX_CATCH_UP_S:
                tick += int(late / FRAME_S)
                self._talking = False
            await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
            if not self._unsent or self._held or self._paused:
                self._talking = False
                continue
            payload = bytes(self._unsent[:frame])
            del self._unsent[:frame]
            payload += self._audio.silence * (frame - len(payload))
            packet = RtpPacket(
                self._neg.payload_type,
                self._sequence,
                # the RTP clock (8000/s for G.711 and G.722 alike) runs through silences
                self._timestamp_base + tick * FRAME_SAMPLES,
                self._ssrc,
                payload,
                marker=not self._talking,
            )
            self._talking = True
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._sent_ms += len(payload) / self._audio.bytes_per_ms
            if self._transport is not None and not self._transport.is_closing():
                self._transport.sendto(packet.to_bytes(), self._remote)
                self.packets_sent += 1

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not self._held and time.monotonic() - self._last_rtp > self._timeout_s:
                logger.warning("sip call %s: no RTP for %g s: hanging up", self.call_id, self._timeout_s)
                self.hang_up()
                return
