"""Call control's sans-I/O parts: the webhook event and its signature (checked by openai-python's
own verifier), the values a reject or refer request may carry, the accepted session's codec."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from cosyagent.config import ConfigError, SipConfig
from cosyagent.runtime.sessions import Admission
from cosyagent.transports.sdp import negotiate
from cosyagent.transports.sip_calls import phone_session
from cosyagent.transports.sip_control import (
    CallControl,
    WebhookError,
    incoming_event,
    post_event,
    refer_target,
    reject_status,
    signature_headers,
)
from cosyagent.transports.sip_message import parse
from cosyagent.transports.sip_server import SipServer, SipSettings
from cosyagent.transports.webrtc_offer import CallError

INVITE = (
    b"INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a\r\n"
    b"To: <sip:agent@127.0.0.1>\r\n"
    b"Call-ID: c1@host\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Authorization: Digest secret\r\n"
    b"X-Account: 42\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n"


@pytest.mark.parametrize("secret", ["whsec_c2VjcmV0IGtleSBieXRlcw==", "plain text secret"])
def test_the_event_is_signed_as_openai_signs_webhooks(secret: str) -> None:
    event = incoming_event("rtc_1", parse(INVITE))
    body = json.dumps(event).encode()
    headers = signature_headers(secret, event["id"], int(time.time()), body)
    client = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    unwrapped = client.webhooks.unwrap(body, headers, secret=secret)
    assert unwrapped.type == "realtime.call.incoming" and unwrapped.data.call_id == "rtc_1"
    names = [h.name for h in unwrapped.data.sip_headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "X-Account", "Content-Length"]  # no Authorization
    with pytest.raises(InvalidWebhookSignatureError):
        client.webhooks.unwrap(body.replace(b"rtc_1", b"rtc_2"), headers, secret=secret)


async def test_a_webhook_nobody_listens_on_is_a_480_with_the_reason() -> None:
    with socket.socket() as sock:  # a port just freed: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    control = CallControl(f"http://127.0.0.1:{port}/hook")
    async with httpx.AsyncClient() as client:
        with pytest.raises(WebhookError) as refused:
            await post_event(client, control, incoming_event("rtc_1", parse(INVITE)), 2.0)
    assert refused.value.sip_status == 480
    assert refused.value.reason.startswith("the webhook could not be reached: ConnectError(")


def test_reject_and_refer_values() -> None:
    assert reject_status(None) == 603 and reject_status(486) == 486
    for bad in (200, 399, 700, True, "486"):
        with pytest.raises(CallError, match="status_code must be a SIP error status 400-699"):
            reject_status(bad)  # type: ignore[arg-type]
    assert refer_target("sip:bob@192.0.2.1:5060;transport=tcp") == "sip:bob@192.0.2.1:5060;transport=tcp"
    assert refer_target("tel:+15551234567") == "tel:+15551234567"
    for bad in ("http://x", "sip:a b@c", "sip:a>@c", "sip:a\r\nVia: x", 5):
        with pytest.raises(CallError):
            refer_target(bad)


def test_the_phone_leg_chooses_the_codec_of_an_accepted_session() -> None:
    negotiated = negotiate(OFFER.encode())
    session = {
        "type": "realtime",
        "model": "m",
        "instructions": "hi",
        "audio": {"output": {"voice": "v", "format": {"type": "audio/pcm"}}},
    }
    merged = phone_session(session, negotiated)
    assert "model" not in merged and merged["instructions"] == "hi"
    assert merged["audio"] == {
        "output": {"voice": "v", "format": {"type": "audio/pcma"}},
        "input": {"format": {"type": "audio/pcma"}},
    }
    assert phone_session(None, negotiated)["audio"]["input"]["format"] == {"type": "audio/pcma"}


async def test_a_ringing_call_gets_503_when_the_server_stops() -> None:
    """Real sockets, no models: a webhook that never answers, an INVITE from a raw UDP peer."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the POST and never answers
        writer.close()

    hook = await asyncio.start_server(silent, "127.0.0.1", 0)
    hook_port = hook.sockets[0].getsockname()[1]

    def admit(model: str | None, session: dict[str, Any]) -> Admission:
        raise AssertionError("a ringing call admits nothing")

    settings = SipSettings("127.0.0.1", 0, 30000, 30999, 5.0)
    server = SipServer(settings, admit, CallControl(f"http://127.0.0.1:{hook_port}/hook", accept_timeout_s=30))
    await server.start()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        invite = (
            "INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{peer.getsockname()[1]};branch=z9hG4bKs\r\n"
            "From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:agent@127.0.0.1>\r\nCall-ID: stop-1\r\nCSeq: 1 INVITE\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n{OFFER}"
        ).encode()
        peer.sendto(invite, ("127.0.0.1", server.port))
        statuses = [parse(await asyncio.wait_for(loop.sock_recv(peer, 4096), 5)).status for _ in range(2)]
        assert statuses == [100, 180] and len(server.control.ringing) == 1
        await server.stop()
        final = parse(await asyncio.wait_for(loop.sock_recv(peer, 4096), 5))
        assert (final.status, final.reason) == (503, "The server is shutting down")
        assert not server.control.ringing
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sip-rtc_")]
    finally:
        peer.close()
        hook.close()
        await hook.wait_closed()


def test_call_control_config_is_checked() -> None:
    assert SipConfig(webhook_url="https://backend.example/sip").accept_timeout_s == 10.0
    with pytest.raises(ConfigError, match=r"sip\.webhook_url must be an http:// or https:// URL, got 'ftp://x'"):
        SipConfig(webhook_url="ftp://x")
    with pytest.raises(ConfigError, match=r"sip\.accept_timeout_s must be within 0-300 s"):
        SipConfig(accept_timeout_s=0)
