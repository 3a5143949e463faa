"""`/v1/realtime/calls`: Realtime sessions over WebRTC, the OpenAI WebRTC flow.

``POST /v1/realtime/calls`` takes an SDP offer (``application/sdp``, or the multipart
form with ``sdp`` and ``session`` parts that openai-python's ``realtime.calls.create``
sends) and answers 201 with the SDP answer and ``Location: /v1/realtime/calls/{id}``.
``POST /v1/realtime/calls/{id}/hangup`` ends a call and frees everything: a WebRTC call, a
phone call of the SIP endpoint (its other routes are in :mod:`cosyagent.web.sip_calls`), or a
carrier's media-stream call (by the carrier's call id: the socket is closed with 1000).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from cosyagent.runtime import Runtime
from cosyagent.runtime.sessions import Admission, SessionConfigError, SessionRefused
from cosyagent.transports.phone_calls import PhoneCalls
from cosyagent.transports.sip_server import SipServer
from cosyagent.transports.webrtc import TRANSPORT, CallRegistry, WebRTCCall, ice_servers_from_config
from cosyagent.transports.webrtc_offer import (
    MAX_OFFER_BYTES,
    CallError,
    CallLimitError,
    OfferError,
    limit_host_addresses,
)
from cosyagent.web.client_secrets import ClientSecret

logger = logging.getLogger(__name__)


def calls_router(runtime: Runtime) -> APIRouter:
    registry = CallRegistry()
    runtime.sessions.register(TRANSPORT)
    limit_host_addresses(runtime.config.webrtc.host_addresses)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.calls = registry
        try:
            yield
        finally:
            await registry.close_all()

    router = APIRouter(lifespan=lifespan)

    @router.post("/v1/realtime/calls", status_code=201, response_class=Response)
    async def create_call(request: Request, model: str | None = None) -> Response:
        try:
            offer, session = await _read_offer(request)
            secret: ClientSecret | None = request.scope.get("state", {}).get("client_secret")
            if secret is not None:  # its configuration first; the request's own settings on top
                session = secret.session | (session or {})
                model = secret.model or model
            call_id, answer = await _open(_admit(model or _model_of(session), session), offer)
        except CallError as exc:
            return call_error_response(exc)
        logger.info("call %s started (%d active)", call_id, len(registry))
        return Response(
            answer,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call_id}"},
        )

    @router.post("/v1/realtime/calls/{call_id}/hangup", response_class=Response)
    async def hang_up(request: Request, call_id: str) -> Response:
        sip: SipServer | None = request.app.state.sip_server
        phone_calls: PhoneCalls = request.app.state.phone_calls
        try:
            if phone_calls.get(call_id) is not None:  # a live phone call: SIP (BYE) or a carrier's stream
                await phone_calls.hang_up(call_id)
            elif sip is not None and sip.control.knows(call_id):  # a SIP call still ringing: 603
                await sip.control.hang_up(call_id)
            else:
                await registry.hang_up(call_id)
        except CallError as exc:
            return call_error_response(exc)
        return Response(status_code=200)

    def _admit(model: str | None, session: dict[str, Any] | None) -> Admission:
        try:
            return runtime.sessions.admit(TRANSPORT, model=model, session=session, audio_on_media_tracks=True)
        except SessionConfigError as exc:
            raise CallError(exc.message, code=exc.code, param=exc.param) from exc
        except SessionRefused as exc:  # counted by the registry
            raise CallLimitError(f"{exc.message}; try again later", code=exc.code) from exc

    async def _open(admission: Admission, offer: str) -> tuple[str, str]:
        """Answer the offer; the admission's slot is held until the call ends."""
        settings = runtime.config.webrtc
        ice_servers = ice_servers_from_config(settings.ice_servers)

        def make_call(call_id: str) -> WebRTCCall:
            return WebRTCCall(call_id, admission.session, ice_servers, settings.connect_timeout_s)

        try:
            return await registry.open(offer, make_call, admission.release, max_calls=settings.max_calls)
        except CallLimitError:
            admission.release()
            runtime.telemetry.count_refusal(TRANSPORT, CallLimitError.code)
            raise
        except BaseException:
            admission.release()
            raise

    return router


async def _read_offer(request: Request) -> tuple[str, dict[str, Any] | None]:
    """The SDP offer and the optional session configuration, from either request shape."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=4, max_fields=4, max_part_size=MAX_OFFER_BYTES) as form:
            sdp = await _form_text(form.get("sdp"))
            raw_session = await _form_text(form.get("session"))
        if sdp is None:
            raise OfferError("the multipart form has no 'sdp' part")
        return sdp, _session_object(raw_session)
    body = bytearray()
    async for chunk in request.stream():  # stop reading as soon as it is too large
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise OfferError(f"the SDP offer is over {MAX_OFFER_BYTES} bytes", code="offer_too_large", status=413)
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        raise OfferError("the SDP offer is not UTF-8 text") from exc


async def _form_text(value: str | UploadFile | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    data = await value.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OfferError(f"the form part {value.filename!r} is not UTF-8 text") from exc


def _session_object(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    try:
        session = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CallError(f"the 'session' part is not valid JSON: {exc}", code="invalid_session") from exc
    if not isinstance(session, dict):
        raise CallError("the 'session' part must be a JSON object", code="invalid_session")
    return session


def _model_of(session: dict[str, Any] | None) -> str | None:
    model = session.get("model") if session else None
    return model if isinstance(model, str) and model else None


def call_error_response(exc: CallError) -> JSONResponse:
    kind = "server_error" if exc.status >= 500 else "invalid_request_error"
    headers = {"Retry-After": str(SessionRefused.retry_after_s)} if isinstance(exc, CallLimitError) else None
    return JSONResponse(
        {"error": {"message": exc.message, "type": kind, "code": exc.code, "param": exc.param}},
        status_code=exc.status,
        headers=headers,
    )
