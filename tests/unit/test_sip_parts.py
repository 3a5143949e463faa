"""The SIP endpoint's sans-I/O parts: the message parser, SDP negotiation, RTP packets, the
jitter buffer and RFC 4733 digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosyagent.config import ConfigError, SipConfig, load_config
from cosyagent.transports.rtp import DtmfReceiver, JitterBuffer, RtpError, RtpPacket, parse_rtp
from cosyagent.transports.sdp import SdpError, answer, negotiate, parse_offer
from cosyagent.transports.sip_message import MAX_MESSAGE_BYTES, SipParseError, parse, response, tag_of, uri_of

SDP_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
)


def invite(body: str = SDP_OFFER, **replace: str) -> bytes:
    headers = {
        "Via": "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport",
        "Max-Forwards": "70",
        "From": '"Caller" <sip:caller@127.0.0.1>;tag=from1',
        "To": "<sip:agent@127.0.0.1>",
        "Call-ID": "call-1@127.0.0.1",
        "CSeq": "1 INVITE",
        "Contact": "<sip:caller@127.0.0.1:5070>",
        "Content-Type": "application/sdp",
        "Content-Length": str(len(body.encode())),
    }
    headers.update(replace)
    lines = ["INVITE sip:agent@127.0.0.1 SIP/2.0", *(f"{k}: {v}" for k, v in headers.items() if v)]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def test_a_request_parses_with_compact_and_folded_headers() -> None:
    data = invite().replace(b"Call-ID:", b"i:").replace(b"Max-Forwards: 70", b"Max-Forwards:\r\n 70")
    message = parse(data)
    assert message.method == "INVITE" and message.uri == "sip:agent@127.0.0.1"
    assert message.call_id == "call-1@127.0.0.1"
    assert message.header("Max-Forwards") == "70"
    assert message.cseq == (1, "INVITE")
    assert message.branch == "z9hG4bKabc"
    assert message.body == SDP_OFFER.encode()
    assert tag_of(message.header("From")) == "from1"
    assert uri_of(message.header("Contact") or "") == "sip:caller@127.0.0.1:5070"


@pytest.mark.parametrize(
    ("data", "reason", "answerable"),
    [
        (b"\x00\xff\xfe garbage", "Message head is not UTF-8", False),
        (b"hello world\r\n\r\n", "Malformed request line", False),
        (invite(**{"Call-ID": ""}), "Missing Call-ID header", False),
        (invite(**{"CSeq": "1 BYE"}), "CSeq method does not match the request", True),
        (invite(**{"CSeq": "one INVITE"}), "Malformed CSeq", True),
        (invite(**{"Content-Length": "9999"}), "Content-Length larger than the body", True),
        (invite(**{"From": "<sip:caller@127.0.0.1>"}), "From header without a tag", True),
        (invite(body="x" * MAX_MESSAGE_BYTES), "Message Too Large", True),
        (invite(body="")[:-4], "No empty line after the headers", True),
        (invite().replace(b"Max-Forwards: 70", b"Max Forwards 70"), "Malformed header line", False),
    ],
)
def test_a_malformed_message_says_why(data: bytes, reason: str, answerable: bool) -> None:
    with pytest.raises(SipParseError) as caught:
        parse(data)
    assert caught.value.reason == reason
    assert caught.value.answerable is answerable


def test_a_response_copies_the_dialog_headers_exactly_and_adds_the_to_tag() -> None:
    request = parse(invite())
    ok = response(request, 200, to_tag="local9")
    text = ok.to_bytes().decode()
    assert text.startswith("SIP/2.0 200 OK\r\n")
    for name in ("Via", "From", "Call-ID", "CSeq"):
        assert f"{name}: {request.header(name)}\r\n" in text
    assert "To: <sip:agent@127.0.0.1>;tag=local9\r\n" in text
    assert text.endswith("Content-Length: 0\r\n\r\n")
    assert response(request, 488, "No\r\ncommon\tcodec").reason == "No common codec"


def test_negotiation_follows_our_codec_order_and_answers_every_media_line() -> None:
    chosen = negotiate(SDP_OFFER.encode(), ("pcmu", "pcma"))  # G.722 offered first, but not ours
    assert chosen.audio.encoding == "pcmu" and chosen.payload_type == 0
    chosen = negotiate(SDP_OFFER.encode(), ("pcma", "pcmu"))
    assert chosen.audio.encoding == "pcma" and chosen.payload_type == 8
    assert chosen.dtmf_payload_type == 101
    assert (chosen.address, chosen.port) == ("127.0.0.1", 4000)
    sdp = answer(chosen, "127.0.0.1", 10002).decode()
    assert "m=audio 10002 RTP/AVP 8 101\r\n" in sdp and "a=rtpmap:8 PCMA/8000\r\n" in sdp
    assert "m=video 0 RTP/AVP 96\r\n" in sdp  # refused, but answered (RFC 3264)
    _, media = parse_offer(sdp.encode())
    assert [m.kind for m in media] == ["audio", "video"]


def test_g722_is_chosen_when_offered_even_after_g711_and_answered_as_g722_8000() -> None:
    offer = SDP_OFFER.replace("9 8 0 101", "0 8 9 101")
    chosen = negotiate(offer.encode())  # the default order: g722, pcmu, pcma
    assert (chosen.audio.encoding, chosen.audio.rate, chosen.payload_type) == ("g722", 16000, 9)
    assert chosen.dtmf_payload_type == 101
    sdp = answer(chosen, "127.0.0.1", 10002).decode()
    # RFC 3551 section 4.5.2: the RTP clock is 8000/s although the audio is 16 kHz
    assert "m=audio 10002 RTP/AVP 9 101\r\n" in sdp and "a=rtpmap:9 G722/8000\r\n" in sdp
    assert chosen.audio.frame_bytes() == 160  # 20 ms at 64 kbit/s
    # A dynamic payload type named G722/8000 is G.722 too; static 9 needs no rtpmap.
    dynamic = SDP_OFFER.replace("9 8 0 101", "0 110 101").replace("a=rtpmap:9 G722", "a=rtpmap:110 G722")
    assert negotiate(dynamic.encode()).payload_type == 110
    static = SDP_OFFER.replace("a=rtpmap:9 G722/8000\r\n", "")
    assert negotiate(static.encode()).audio.encoding == "g722"
    # A G.722-only offer to a server that does not list g722: 488 naming what it has.
    with pytest.raises(SdpError, match="No common codec: only PCMU, PCMA over RTP/AVP"):
        negotiate(SDP_OFFER.replace("9 8 0 101", "9 101").encode(), ("pcmu", "pcma"))


def test_static_payload_types_need_no_rtpmap() -> None:
    offer = SDP_OFFER.replace("9 8 0 101", "0").replace("m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n", "")
    chosen = negotiate(offer.encode())
    assert (chosen.audio.encoding, chosen.payload_type, chosen.dtmf_payload_type) == ("pcmu", 0, None)


@pytest.mark.parametrize(
    ("offer", "reason"),
    [
        (SDP_OFFER.replace("9 8 0 101", "18 3 101"), "No common codec: only G722, PCMU, PCMA over RTP/AVP"),
        (SDP_OFFER.replace("RTP/AVP 9 8 0 101", "RTP/SAVP 0"), "No common codec"),
        (SDP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 not-an-ip"), "not an IP address"),
        ("hello", "v=0"),
        (SDP_OFFER.replace("m=audio 4000", "m=audio x"), "Malformed SDP m= line"),
    ],
)
def test_an_offer_without_a_common_codec_is_refused(offer: str, reason: str) -> None:
    with pytest.raises(SdpError) as caught:
        negotiate(offer.encode())
    assert reason in caught.value.reason


def test_rtp_packets_round_trip_and_bad_ones_are_refused() -> None:
    packet = RtpPacket(0, 65535, 2**32 - 1, 1234, b"\xff" * 160, marker=True)
    assert parse_rtp(packet.to_bytes()) == packet
    with pytest.raises(RtpError):
        parse_rtp(b"\x80\x00")
    with pytest.raises(RtpError):
        parse_rtp(b"\x40" + packet.to_bytes()[1:])  # version 1


def test_the_jitter_buffer_reorders_drops_late_and_fills_lost_packets() -> None:
    buffer = JitterBuffer(depth=2, max_fill=5)
    silence = b"\xff"
    assert buffer.push(65534, b"a", silence) == [b"a"]
    assert buffer.push(0, b"c", silence) == []  # 65535 may still come
    assert buffer.push(65535, b"b", silence) == [b"b", b"c"]  # in order, across the wrap
    assert buffer.push(65535, b"b", silence) == []  # duplicate
    assert buffer.push(65000, b"old", silence) == []  # late
    assert buffer.dropped_late == 2
    assert buffer.push(3, b"f", silence) == []
    assert buffer.push(4, b"g", silence) == []
    assert buffer.push(5, b"h", silence) == [b"\xff", b"\xff", b"f", b"g", b"h"]  # 1 and 2 given up on
    assert buffer.lost == 2


def test_a_key_press_is_one_digit_however_many_packets_carry_it() -> None:
    receiver = DtmfReceiver()
    digits = [
        receiver.receive(RtpPacket(101, seq, ts, 1, bytes([event, end, 0, duration])))
        for seq, ts, event, end, duration in [
            (1, 800, 5, 0x0A, 160),
            (2, 800, 5, 0x0A, 240),
            (3, 800, 5, 0x8A, 255),
            (4, 800, 5, 0x8A, 255),
            (5, 1600, 11, 0x0A, 160),
            (6, 2400, 16, 0x0A, 160),  # flash: not a key
        ]
    ]
    assert digits == ["5", None, None, None, "#", None]
    with pytest.raises(RtpError):
        receiver.receive(RtpPacket(101, 7, 3200, 1, b"\x01"))


def test_the_sip_section_is_checked(tmp_path: Path) -> None:
    config_file = tmp_path / "sip.yaml"
    config_file.write_text("sip:\n  enabled: true\n  port: 5062\n  rtp_port_min: 20000\n  rtp_port_max: 20099\n")
    sip = load_config(config_file).sip
    assert (sip.enabled, sip.host, sip.port, sip.transports) == (True, "127.0.0.1", 5062, ("udp",))
    assert sip.codecs == ("g722", "pcmu", "pcma")
    config_file.write_text("sip:\n  codecs: [PCMA, g722]\n")
    assert load_config(config_file).sip.codecs == ("pcma", "g722")  # names in any case
    assert load_config().sip.enabled is False
    for bad, message in [
        ({"transports": ("udp", "tls")}, "udp and/or tcp"),
        ({"transports": ()}, "udp and/or tcp"),
        ({"host": "localhost"}, "IP address"),
        ({"host": "0.0.0.0"}, "own address"),
        ({"rtp_port_min": 20000, "rtp_port_max": 20000}, "rtp_port_min"),
        ({"port": 70000}, "0-65535"),
        ({"codecs": ("g729",)}, r"sip.codecs: unknown codec 'g729' \(known: g722, pcmu, pcma\)"),
        ({"codecs": ()}, "sip.codecs must name at least one codec"),
        ({"codecs": ("pcmu", "pcmu")}, "sip.codecs: names pcmu twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SipConfig(**bad)  # type: ignore[arg-type]
