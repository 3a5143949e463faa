"""Call control's sans-I/O parts: the webhook event and its signature (checked by openai-python's
own verifier), the values a reject or refer request may carry, the accepted session's codec."""

from __future__ import annotations

import json
import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from cosyagent.transports.sdp import negotiate
from cosyagent.transports.sip_control import incoming_event, refer_target, reject_status, signature_headers
from cosyagent.transports.sip_message import parse
from cosyagent.transports.sip_server import phone_session
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
