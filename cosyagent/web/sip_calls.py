"""Call control of the SIP endpoint, in the shape of OpenAI's SIP API (docs/phone.md "Call control").

``POST /v1/realtime/calls/{call_id}/accept`` (a session configuration, as openai-python's
``realtime.calls.accept`` sends it), ``/reject`` (optional ``status_code``, default 603) and
``/refer`` (``target_uri``) act on the calls of :class:`~cosyagent.transports.sip_server.SipServer`;
``/hangup`` is shared with WebRTC and carrier calls (:mod:`cosyagent.web.calls`). On a
carrier's media-stream call (Twilio, Telnyx, Exotel, Plivo: the carrier answered it, and a
transfer is the carrier's own API's job) the three answer 409 ``unsupported_for_carrier_call``.
Success is 200 with an
empty body. Errors are OpenAI-style ``{"error": {...}}`` with ``x-should-retry: false`` (the
official SDKs would otherwise resend a 409 or 5xx, and none of these is cured by a resend):
404 ``call_not_found``, 409 ``invalid_call_state`` / ``call_already_accepted``, 400 for a
bad body or session value, 503 when the server is full (the call is then refused too), 502
``refer_rejected`` and 504 ``refer_timeout`` when the caller refuses or ignores a REFER.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from cosyagent.transports.phone_calls import PhoneCalls, not_for_carrier_calls
from cosyagent.transports.sip_calls import SipCalls
from cosyagent.transports.sip_server import SipServer
from cosyagent.transports.webrtc_offer import CallError, CallNotFound
from cosyagent.web.calls import call_error_response

MAX_BODY_BYTES = 256 << 10


def sip_calls_router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/realtime/calls/{call_id}/accept", response_class=Response)
    async def accept(request: Request, call_id: str) -> Response:
        try:
            _calls(request, call_id, "accept").accept(call_id, await _body(request, required=True))
        except CallError as exc:
            return _error(exc)
        return Response(status_code=200)

    @router.post("/v1/realtime/calls/{call_id}/reject", response_class=Response)
    async def reject(request: Request, call_id: str) -> Response:
        try:
            calls = _calls(request, call_id, "reject")
            status_code = (await _body(request, required=False)).get("status_code")
            calls.reject(call_id, status_code)
        except CallError as exc:
            return _error(exc)
        return Response(status_code=200)

    @router.post("/v1/realtime/calls/{call_id}/refer", response_class=Response)
    async def refer(request: Request, call_id: str) -> Response:
        try:
            calls = _calls(request, call_id, "refer")
            body = await _body(request, required=True)
            if "target_uri" not in body:
                raise CallError(
                    "the body needs 'target_uri' (a sip:, sips: or tel: URI)", code="missing_required_parameter"
                )
            await calls.refer(call_id, body["target_uri"])
        except CallError as exc:
            return _error(exc)
        return Response(status_code=200)

    return router


def _calls(request: Request, call_id: str, action: str) -> SipCalls:
    """The SIP endpoint's calls; the error for a carrier's call or when SIP is off."""
    phone_calls: PhoneCalls = request.app.state.phone_calls
    carrier = phone_calls.carrier_call(call_id)
    if carrier is not None:
        raise not_for_carrier_calls(carrier, action)
    sip: SipServer | None = request.app.state.sip_server
    if sip is None:
        raise CallNotFound(f"no call {call_id!r}: the SIP endpoint is off (sip.enabled)")
    return sip.control


async def _body(request: Request, *, required: bool) -> dict[str, Any]:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise CallError(f"the body is over {MAX_BODY_BYTES} bytes", code="body_too_large", status=413)
    if not data.strip():
        if required:
            raise CallError("the body must be a JSON object", code="invalid_json")
        return {}
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CallError(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise CallError("the body must be a JSON object", code="invalid_json")
    return body


def _error(exc: CallError) -> Response:
    answer = call_error_response(exc)
    answer.headers["x-should-retry"] = "false"
    return answer
