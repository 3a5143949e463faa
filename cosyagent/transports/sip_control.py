"""Call control in the OpenAI style: the ``realtime.call.incoming`` webhook and ringing calls.

With ``sip.webhook_url`` set, an INVITE the endpoint can serve is not answered at once: the
caller hears ringing (180), the event below is POSTed to the webhook, and the call waits
(``sip.accept_timeout_s``, from the INVITE) for ``POST /v1/realtime/calls/{id}/accept`` or
``/reject``::

    {"object": "event", "id": "evt_...", "type": "realtime.call.incoming", "created_at": 1764620000,
     "data": {"call_id": "rtc_...", "sip_headers": [{"name": "From", "value": "..."}, ...]}}

``sip_headers`` are the INVITE's headers in order, without Authorization and
Proxy-Authorization. With ``sip.webhook_secret`` set, the POST carries the Standard Webhooks
headers OpenAI sends (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64
HMAC-SHA256 of "id.timestamp.body">``), so ``openai.webhooks.unwrap(body, headers,
secret=...)`` verifies it. A webhook that cannot be reached or does not answer in time gets
the call refused with 480, one that answers with an error status with 500; the log says why.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from cosyagent.transports.sdp import Negotiated
from cosyagent.transports.sip_message import SipMessage
from cosyagent.transports.sip_tcp import Address
from cosyagent.transports.webrtc_offer import CallError

logger = logging.getLogger(__name__)

EVENT_TYPE = "realtime.call.incoming"
PRIVATE_HEADERS = frozenset({"Authorization", "Proxy-Authorization"})
USER_AGENT = "cosyagent (call control webhook)"


@dataclass(frozen=True)
class CallControl:
    webhook_url: str
    webhook_secret: str = ""
    accept_timeout_s: float = 10.0


class WebhookError(Exception):
    """The webhook could not take the event; ``sip_status`` is what the caller is told."""

    def __init__(self, reason: str, sip_status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sip_status = sip_status


class CallStateError(CallError):
    """The call exists but is not in a state the request needs (409)."""

    status = 409
    code = "invalid_call_state"


@dataclass
class RingingCall:
    """An INVITE waiting for the webhook's decision; the caller hears 180 Ringing."""

    public_id: str
    invite: SipMessage
    addr: Address
    negotiated: Negotiated
    local_tag: str
    ringing: bytes  # the 180, sent again for a retransmitted INVITE
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def new_call_id() -> str:
    """A call's id in the HTTP API (the SIP Call-ID may hold characters a URL path cannot)."""
    return "rtc_" + secrets.token_hex(16)


def incoming_event(public_id: str, invite: SipMessage) -> dict[str, Any]:
    headers = [{"name": name, "value": value} for name, value in invite.headers if name not in PRIVATE_HEADERS]
    return {
        "object": "event",
        "id": "evt_" + secrets.token_hex(12),
        "type": EVENT_TYPE,
        "created_at": int(time.time()),
        "data": {"call_id": public_id, "sip_headers": headers},
    }


def signature_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks signing, as OpenAI's webhooks and openai-python's verifier do it."""
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{digest}"}


async def post_event(client: httpx.AsyncClient, control: CallControl, event: dict[str, Any], timeout_s: float) -> None:
    """POST ``event`` to the webhook; WebhookError when it is not taken (no 2xx in time)."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if control.webhook_secret:
        headers |= signature_headers(control.webhook_secret, event["id"], int(time.time()), body)
    try:
        answer = await client.post(control.webhook_url, content=body, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException as exc:
        raise WebhookError(f"the webhook did not answer in {timeout_s:.3g} s", 480) from exc
    except httpx.HTTPError as exc:
        raise WebhookError(f"the webhook could not be reached: {exc!r}", 480) from exc
    if not answer.is_success:
        raise WebhookError(f"the webhook answered {answer.status_code} {answer.reason_phrase}", 500)


def reject_status(status_code: int | None) -> int:
    """The SIP status of a reject request: 603 by default, else a final error status."""
    if status_code is None:
        return 603
    if isinstance(status_code, bool) or not isinstance(status_code, int) or not 400 <= status_code <= 699:
        raise CallError(f"status_code must be a SIP error status 400-699, got {status_code!r}", code="invalid_value")
    return status_code


def refer_target(target_uri: object) -> str:
    """A REFER target: a sip:, sips: or tel: URI of one line, without brackets."""
    if not isinstance(target_uri, str) or not target_uri.startswith(("sip:", "sips:", "tel:")):
        raise CallError(f"target_uri must be a sip:, sips: or tel: URI, got {target_uri!r}", code="invalid_value")
    if len(target_uri) > 512 or any(c in target_uri for c in "<>\r\n\"' ") or not target_uri.isprintable():
        raise CallError(
            "target_uri holds characters a SIP URI cannot (spaces, quotes, <>, line breaks)", code="invalid_value"
        )
    return target_uri
