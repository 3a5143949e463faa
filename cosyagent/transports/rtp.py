"""RTP (RFC 3550) for a SIP call, sans-I/O: packets, a small reordering jitter buffer, RFC 4733
telephone-event digits, and the port range calls take their RTP sockets from."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!BBHII")
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
DTMF_EVENTS = "0123456789*#ABCD"


class RtpError(ValueError):
    pass


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def to_bytes(self) -> bytes:
        first = 0x80  # version 2, no padding, no extension, no CSRC
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        return HEADER.pack(first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc) + self.payload


def parse_rtp(data: bytes) -> RtpPacket:
    """One RTP packet; RtpError says why a datagram is not one."""
    if len(data) < HEADER.size:
        raise RtpError("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError("not RTP version 2")
    offset = HEADER.size + 4 * (first & 0x0F)  # CSRCs
    if first & 0x10:  # header extension
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20:  # padding: its length is the last byte
        if not data or data[-1] == 0 or data[-1] > end - offset:
            raise RtpError("bad padding")
        end -= data[-1]
    if offset > end:
        raise RtpError("truncated packet")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80))


def _newer(a: int, b: int) -> bool:
    """Sequence number ``a`` comes after ``b`` (16-bit wrap-around)."""
    return 0 < (a - b) & 0xFFFF < 0x8000


class JitterBuffer:
    """Puts packets back in sequence order: a packet waits while an earlier one may still
    come, up to ``depth`` packets; a late or duplicate packet is dropped; a gap given up on is
    filled with silence (up to ``max_fill`` frames) so the session's clock keeps step."""

    def __init__(self, depth: int = 3, max_fill: int = 5) -> None:
        self.depth = depth
        self.max_fill = max_fill
        self._waiting: dict[int, bytes] = {}
        self._next: int | None = None  # the sequence number due next
        self.dropped_late = 0
        self.lost = 0

    def push(self, sequence: int, payload: bytes, silence: bytes) -> list[bytes]:
        """Payloads ready to play, in order, after ``sequence`` arrived."""
        if self._next is None:
            self._next = sequence
        if sequence in self._waiting or (sequence != self._next and not _newer(sequence, self._next)):
            self.dropped_late += 1
            return []
        self._waiting[sequence] = payload
        ready = self._drain()
        while len(self._waiting) > self.depth:  # the gap's packet is given up on
            due = self._next
            earliest = min(self._waiting, key=lambda s: (s - due) & 0xFFFF)
            missing = (earliest - due) & 0xFFFF
            self.lost += missing
            ready += [silence * (len(self._waiting[earliest]) // len(silence))] * min(missing, self.max_fill)
            self._next = earliest
            ready += self._drain()
        return ready

    def _drain(self) -> list[bytes]:
        ready = []
        while self._next is not None and self._next in self._waiting:
            ready.append(self._waiting.pop(self._next))
            self._next = (self._next + 1) & 0xFFFF
        return ready


class DtmfReceiver:
    """RFC 4733 telephone-events: each key press is one event (several packets sharing a
    timestamp, the end packet sent three times); it yields its digit once."""

    def __init__(self) -> None:
        self._last_timestamp: int | None = None

    def receive(self, packet: RtpPacket) -> str | None:
        if len(packet.payload) < 4:
            raise RtpError("telephone-event payload shorter than 4 bytes")
        event = packet.payload[0]
        if event >= len(DTMF_EVENTS):
            return None  # a tone that is not a key (RFC 4733 section 3.2's other events)
        if packet.timestamp == self._last_timestamp:
            return None
        self._last_timestamp = packet.timestamp
        return DTMF_EVENTS[event]


class PortRangeExhausted(Exception):
    pass


def bind_rtp_socket(host: str, port_min: int, port_max: int) -> socket.socket:
    """A UDP socket on ``host`` at the first free even port in [port_min, port_max]
    (odd ports are RTCP's by convention); PortRangeExhausted when none is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in range(port_min + (port_min % 2), port_max + 1, 2):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        sock.setblocking(False)
        return sock
    raise PortRangeExhausted(f"no free RTP port in {port_min}-{port_max} on {host}")
