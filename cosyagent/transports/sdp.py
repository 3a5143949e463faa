"""SDP offer/answer for a SIP call (RFC 4566, RFC 3264), sans-I/O: read the caller's offer,
choose a codec (G.722, PCMU or PCMA: the first of the server's ``sip.codecs`` that the offer
has, so a caller that offers G.722 gets wideband audio even when it lists G.711 first) and
RFC 4733 telephone-event when offered, and write the answer. Every media line of the offer
gets one in the answer; all but the first usable audio line are refused (port 0).

G.722 is named ``G722/8000`` although it carries 16 kHz audio (RFC 3551 section 4.5.2: its RTP
clock runs at 8000 per second, 160 ticks and 160 bytes per 20 ms packet, as for G.711)."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from cosyagent.audio.carrier import CarrierAudio, Encoding

STATIC_PAYLOADS: dict[int, Encoding] = {0: "pcmu", 8: "pcma", 9: "g722"}  # RFC 3551 static payload types
CODEC_NAMES: dict[Encoding, str] = {"pcmu": "PCMU", "pcma": "PCMA", "g722": "G722"}
# an rtpmap's "name/clock[/channels]" (lower case) -> the codec; G.722's clock is 8000 too
RTPMAP_NAMES: dict[str, Encoding] = {
    f"{name.lower()}/8000{channels}": encoding for encoding, name in CODEC_NAMES.items() for channels in ("", "/1")
}
SIP_CODECS: tuple[Encoding, ...] = ("g722", "pcmu", "pcma")  # the default preference (sip.codecs)
AUDIO_RATES: dict[Encoding, int] = {"pcmu": 8000, "pcma": 8000, "g722": 16000}
# What an answer says to each offered direction (RFC 3264 section 6.1).
ANSWER_DIRECTIONS = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class SdpError(ValueError):
    """An offer that cannot be answered: ``reason`` is the 488's reason phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MediaLine:
    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    rtpmap: dict[int, str]  # payload type -> "name/rate" (lower case)
    address: str | None  # its own c= line


@dataclass(frozen=True)
class Negotiated:
    """What a call sends and receives: ``audio`` (G.711 or G.722) as ``payload_type``, DTMF as
    ``dtmf_payload_type`` (None: not offered), to the caller's ``address``:``port``."""

    audio: CarrierAudio
    payload_type: int
    dtmf_payload_type: int | None
    address: str
    port: int
    offer_media: tuple[MediaLine, ...]
    audio_index: int


def codec_preference(names: tuple[str, ...]) -> tuple[Encoding, ...]:
    """``sip.codecs`` as encodings (already checked by the config); ValueError for a name we lack."""
    known: dict[str, Encoding] = {encoding: encoding for encoding in SIP_CODECS}
    try:
        return tuple(known[name.lower()] for name in names)
    except KeyError as exc:
        raise ValueError(f"unknown SIP codec {exc.args[0]!r} (known: {', '.join(SIP_CODECS)})") from None


def parse_offer(body: bytes) -> tuple[str | None, list[MediaLine]]:
    """(session-level connection address, media lines) of an SDP body; SdpError when it is not SDP."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP does not start with v=0")
    session_address: str | None = None
    media: list[dict[str, object]] = []
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("Malformed SDP line")
        key, value = line[0], line[2:]
        if key == "m":
            media.append(_media_line(value))
        elif key == "c":
            address = _connection(value)
            if media:
                media[-1]["address"] = address
            else:
                session_address = address
        elif key == "a" and media and value.startswith("rtpmap:"):
            pt_text, _, encoding = value[len("rtpmap:") :].partition(" ")
            if pt_text.isdigit():
                rtpmap = media[-1]["rtpmap"]
                assert isinstance(rtpmap, dict)
                rtpmap[int(pt_text)] = encoding.strip().lower()
    return session_address, [MediaLine(**m) for m in media]  # type: ignore[arg-type]


def _media_line(value: str) -> dict[str, object]:
    parts = value.split()
    if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
        raise SdpError("Malformed SDP m= line")
    port = int(parts[1].split("/")[0])
    if port > 65535:
        raise SdpError("SDP media port out of range")
    return {
        "kind": parts[0],
        "port": port,
        "proto": parts[2],
        "formats": tuple(parts[3:]),
        "rtpmap": {},
        "address": None,
    }


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("Malformed SDP c= line")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SdpError("SDP c= address is not an IP address") from None
    return address


def negotiate(body: bytes, codecs: tuple[Encoding, ...] = SIP_CODECS) -> Negotiated:
    """Choose the call's codec from an offer: the first of ``codecs`` (our order of preference)
    that an audio line offers over RTP/AVP; SdpError (488) when none does."""
    session_address, media = parse_offer(body)
    for index, line in enumerate(media):
        if line.kind != "audio" or line.port == 0 or line.proto != "RTP/AVP":
            continue
        chosen = _codec(line, codecs)
        if chosen is None:
            continue
        address = line.address or session_address
        if address is None:
            raise SdpError("SDP offer has no c= address")
        encoding, payload_type = chosen
        dtmf = next(
            (pt for pt in _payload_types(line) if line.rtpmap.get(pt) == "telephone-event/8000"),
            None,
        )
        audio = CarrierAudio(encoding, AUDIO_RATES[encoding])
        return Negotiated(audio, payload_type, dtmf, address, line.port, tuple(media), index)
    names = ", ".join(CODEC_NAMES[codec] for codec in codecs)
    raise SdpError(f"No common codec: only {names} over RTP/AVP")


def _payload_types(line: MediaLine) -> list[int]:
    return [int(f) for f in line.formats if f.isdigit() and int(f) < 128]


def _codec(line: MediaLine, codecs: tuple[Encoding, ...]) -> tuple[Encoding, int] | None:
    offered: dict[Encoding, int] = {}  # each codec's first payload type in the offer
    for pt in _payload_types(line):
        mapped = line.rtpmap.get(pt)
        encoding = STATIC_PAYLOADS.get(pt) if mapped is None else RTPMAP_NAMES.get(mapped)
        if encoding is not None:
            offered.setdefault(encoding, pt)
    return next(((codec, offered[codec]) for codec in codecs if codec in offered), None)


def offered_direction(body: bytes, audio_index: int) -> str:
    """The direction an offer asks for its audio line (RFC 3264 section 5.1): its own
    ``a=sendonly|recvonly|inactive|sendrecv``, else the session-level one, else sendrecv. A
    ``c=`` of 0.0.0.0 (the RFC 2543 way to hold) counts as sendonly."""
    session, media, index = "sendrecv", None, -1
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=") and line[2:] in ANSWER_DIRECTIONS:
            if index < 0:
                session = line[2:]
            elif index == audio_index:
                media = line[2:]
        elif line == "c=IN IP4 0.0.0.0" and index in (-1, audio_index):
            media = media or "sendonly"
    return media or session


def answer(
    negotiated: Negotiated, host: str, port: int, direction: str = "sendrecv", origin: tuple[int, int] | None = None
) -> bytes:
    """The SDP answer: our ``host``:``port`` for the chosen codec (and telephone-event), in
    ``direction``; ``origin`` is the o= line's (session id, version), new when None."""
    family = "IP6" if ":" in host else "IP4"
    session_id, version = origin or (secrets.randbelow(2**31), 1)
    lines = [
        "v=0",
        f"o=cosyagent {session_id} {version} IN {family} {host}",
        "s=cosyagent",
        f"c=IN {family} {host}",
        "t=0 0",
    ]
    for index, offered in enumerate(negotiated.offer_media):
        if index != negotiated.audio_index:
            lines.append(f"m={offered.kind} 0 {offered.proto} {' '.join(offered.formats)}")
            continue
        pt, dtmf = negotiated.payload_type, negotiated.dtmf_payload_type
        formats = f"{pt}" if dtmf is None else f"{pt} {dtmf}"
        lines += [f"m=audio {port} RTP/AVP {formats}", f"a=rtpmap:{pt} {CODEC_NAMES[negotiated.audio.encoding]}/8000"]
        if dtmf is not None:
            lines += [f"a=rtpmap:{dtmf} telephone-event/8000", f"a=fmtp:{dtmf} 0-15"]
        lines += ["a=ptime:20", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
