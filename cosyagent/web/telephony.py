"""Telephony webhooks and media streams: Twilio, Telnyx, Exotel and Plivo.

``POST /v1/telephony/twilio/voice`` is the number's voice webhook: it answers with TwiML
that connects the call to ``WS /v1/telephony/twilio/media`` on the host Twilio reached
(``telephony.public_host``, else ``X-Forwarded-Host``/``-Proto``, else ``Host``). With
``telephony.twilio_auth_token`` set, both requests must carry a valid ``X-Twilio-Signature``
(HMAC-SHA1 of the URL and the sorted POST parameters, base64), else 403.
``POST /v1/telephony/plivo/answer`` is Plivo's answer URL, with the ``<Stream>`` XML for
``WS /v1/telephony/plivo/media``. Telnyx (``WS /v1/telephony/telnyx/media``) and Exotel
(``WS /v1/telephony/exotel/media``) are given the socket's URL in their own call control.
Each stream's call is a live phone call under the carrier's call id (:mod:`cosyagent.transports.phone_calls`):
``POST /v1/realtime/calls/{id}/hangup`` and the sideband reach it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape, quoteattr

from fastapi import APIRouter, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from cosyagent.config import TelephonyConfig
from cosyagent.runtime import Runtime
from cosyagent.runtime.sessions import SessionRefused
from cosyagent.transports import exotel, plivo, telnyx, twilio
from cosyagent.transports.carrier_call import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, CarrierCall
from cosyagent.transports.media_stream import Dialect, session_config
from cosyagent.transports.phone_calls import CallIdInUse, PhoneCalls
from cosyagent.web.errors import error_body

logger = logging.getLogger(__name__)

VOICE_PATH = "/v1/telephony/twilio/voice"
MEDIA_PATH = "/v1/telephony/twilio/media"
PLIVO_ANSWER_PATH = "/v1/telephony/plivo/answer"
PLIVO_MEDIA_PATH = "/v1/telephony/plivo/media"


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's request signature: HMAC-SHA1 (key: the auth token) over the full URL followed
    by every POST parameter's name and value, sorted by name, base64."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def public_origin(config: TelephonyConfig, headers: Headers, scheme: str) -> tuple[bool, str]:
    """(secure, host) as the carrier reached us: the configured public host (always TLS), the
    proxy's forwarding headers, or the request itself."""
    if config.public_host:
        return True, config.public_host
    forwarded_host = headers.get("x-forwarded-host", "").split(",")[0].strip()
    forwarded_proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    secure = forwarded_proto == "https" if forwarded_proto else scheme in ("https", "wss")
    return secure, forwarded_host or headers.get("host", "localhost")


def _signed(config: TelephonyConfig, signature: str | None, urls: list[str], params: list[tuple[str, str]]) -> bool:
    if not config.twilio_auth_token:
        return True
    if not signature:
        return False
    return any(hmac.compare_digest(twilio_signature(config.twilio_auth_token, url, params), signature) for url in urls)


def telephony_router(runtime: Runtime, phone_calls: PhoneCalls) -> APIRouter:
    router = APIRouter()
    config = runtime.config.telephony
    for transport in (twilio.TRANSPORT, telnyx.TRANSPORT, exotel.TRANSPORT, plivo.TRANSPORT):
        runtime.sessions.register(transport)

    async def serve_stream(websocket: WebSocket, dialect: Dialect) -> None:
        """Accept, wait for the stream's start (its codec), admit a session in that codec, run it;
        the call is a live phone call (call control) under the carrier's call id meanwhile."""
        await websocket.accept()
        call = CarrierCall(websocket, dialect)
        started = await call.wait_for_start()
        if started is None:
            return
        call_id, names = started.call_id, (dialect.name, started.stream_id)
        logger.info("%s stream %s started: call %s", *names, call_id or "? (none: no call control)")
        try:
            if call_id:
                phone_calls.add(call_id, dialect.name, call)
        except CallIdInUse as exc:  # served all the same: the caller's audio matters more
            logger.warning("%s stream %s: %s: call control reaches the first stream only", *names, exc)
        try:
            try:
                greet = runtime.config.realtime.greet_phone_calls
                audio = session_config(started.audio)
                admission = runtime.sessions.admit(dialect.name, model=None, session=audio, greet=greet)
            except SessionRefused as refusal:
                logger.warning("refused a %s call: %s", dialect.name, refusal.message)
                runtime.telemetry.count_error("telephony", refusal.code)
                await call.close(CLOSE_TRY_AGAIN_LATER, refusal.code)  # the carrier ends the stream
                return
            with admission:
                await call.run(admission.session)
        finally:
            phone_calls.remove(call_id, call)

    @router.post(VOICE_PATH)
    async def twilio_voice(request: Request) -> Response:
        secure, host = public_origin(config, request.headers, request.url.scheme)
        query = f"?{request.url.query}" if request.url.query else ""
        url = f"{'https' if secure else 'http'}://{host}{request.url.path}{query}"
        params = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        if not _signed(config, request.headers.get("x-twilio-signature"), [url], params):
            logger.warning("refused the Twilio voice webhook: X-Twilio-Signature missing or wrong for %s", url)
            message = "X-Twilio-Signature is missing or wrong"
            body = error_body(message, "invalid_request_error", None, "invalid_signature")
            return JSONResponse(body, status_code=403)
        call_sid = dict(params).get("CallSid", "")
        logger.info("twilio call %s: answering with a media stream to %s", call_sid or "?", host)
        stream = f"{'wss' if secure else 'ws'}://{host}{MEDIA_PATH}"
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Response><Connect><Stream url={quoteattr(stream)}/></Connect></Response>"
        )
        return Response(twiml, media_type="text/xml")

    @router.websocket(MEDIA_PATH)
    async def twilio_media(websocket: WebSocket) -> None:
        secure, host = public_origin(config, websocket.headers, websocket.url.scheme)
        # Twilio signs the stream's own URL; accept it written as wss:// or https://.
        urls = [f"{scheme}://{host}{MEDIA_PATH}" for scheme in (("wss", "https") if secure else ("ws", "http"))]
        if not _signed(config, websocket.headers.get("x-twilio-signature"), urls, []):
            logger.warning("refused a Twilio media stream: X-Twilio-Signature missing or wrong")
            await websocket.close(code=CLOSE_POLICY_VIOLATION)  # before accepting: a 403
            return
        await serve_stream(websocket, twilio.TwilioDialect())

    @router.websocket("/v1/telephony/telnyx/media")
    async def telnyx_media(websocket: WebSocket) -> None:
        await serve_stream(websocket, telnyx.TelnyxDialect())

    @router.websocket("/v1/telephony/exotel/media")
    async def exotel_media(websocket: WebSocket) -> None:
        await serve_stream(websocket, exotel.ExotelDialect())

    @router.post(PLIVO_ANSWER_PATH)
    async def plivo_answer(request: Request) -> Response:
        secure, host = public_origin(config, request.headers, request.url.scheme)
        stream = f"{'wss' if secure else 'ws'}://{host}{PLIVO_MEDIA_PATH}"
        logger.info("plivo call: answering with a media stream to %s", host)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response>'
            '<Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">'
            f"{escape(stream)}</Stream></Response>"
        )
        return Response(xml, media_type="application/xml")

    @router.websocket(PLIVO_MEDIA_PATH)
    async def plivo_media(websocket: WebSocket) -> None:
        await serve_stream(websocket, plivo.PlivoDialect())

    return router
