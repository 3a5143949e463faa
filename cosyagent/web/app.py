"""The HTTP app: OpenAI-compatible routes, health, metrics and the realtime socket."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware

from cosyagent.config import ConfigError
from cosyagent.runtime import Runtime
from cosyagent.runtime.sessions import SessionConfigError, SessionRefused
from cosyagent.transports import sideband, sip_calls, sip_register, sip_server
from cosyagent.transports import websocket as websocket_transport
from cosyagent.transports.phone_calls import PhoneCalls
from cosyagent.transports.webrtc_offer import CallNotFound
from cosyagent.web.auth import ApiKeyMiddleware
from cosyagent.web.calls import call_error_response, calls_router
from cosyagent.web.client_secrets import ClientSecret, ClientSecretStore, client_secrets_router
from cosyagent.web.errors import ApiError, error_response, install_error_handlers
from cosyagent.web.local_guard import LocalGuardMiddleware
from cosyagent.web.metrics import ErrorCountingMiddleware, metrics_router
from cosyagent.web.pages import pages_router
from cosyagent.web.sip_calls import sip_calls_router
from cosyagent.web.speech import speech_router
from cosyagent.web.telephony import telephony_router
from cosyagent.web.transcriptions import transcriptions_router
from cosyagent.web.uploads import BodyLimitMiddleware
from cosyagent.web.voices import voices_router

logger = logging.getLogger(__name__)


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            sip = app.state.sip_server = await _start_sip(runtime, phone_calls)
            registrations = app.state.sip_registrations = _registrations(runtime, sip)
            try:
                yield
            finally:
                await registrations.stop()  # Expires: 0 while the endpoint still answers
                if sip is not None:
                    await sip.stop()
        finally:
            await runtime.stop()

    # No /docs or /redoc: Swagger UI and ReDoc load their scripts from a CDN, which fails offline.
    # The schema itself is served, at /openapi.json.
    app = FastAPI(title="cosyagent", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    phone_calls = app.state.phone_calls = PhoneCalls()  # SIP and carrier calls, for call control
    install_error_handlers(app)  # OpenAI-style {"error": {...}} bodies on /v1
    secrets = ClientSecretStore()
    _install_middleware(app, runtime, secrets)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        registrations: sip_register.Registrations | None = getattr(app.state, "sip_registrations", None)
        if registrations is None or not registrations.entries:
            return runtime.health()
        return runtime.health() | {"sip": {"registrations": registrations.health()}}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_object(name) for name in runtime.model_ids()]}

    @app.get("/v1/models/{model_id:path}")  # :path: an LLM's id may hold a slash ("Qwen/Qwen3-8B")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in runtime.model_ids():
            message = f"The model '{model_id}' does not exist; GET /v1/models lists this server's models"
            raise ApiError(404, message, param="model", code="model_not_found")
        return _model_object(model_id)

    runtime.sessions.register(websocket_transport.TRANSPORT)
    if runtime.config.sip.enabled:
        runtime.sessions.register(sip_server.TRANSPORT)
    app.state.sip_server = None

    @app.websocket("/v1/realtime")
    async def realtime(
        websocket: WebSocket, model: str | None = None, call_id: str | None = None, intent: str | None = None
    ) -> None:
        if call_id is not None:  # the sideband: follow a phone call's session
            await _sideband(websocket, phone_calls, app.state.sip_server, call_id)
        else:
            await _new_session(websocket, runtime, model, intent)

    app.include_router(calls_router(runtime))
    app.include_router(sip_calls_router())
    app.include_router(client_secrets_router(runtime, secrets))
    app.include_router(metrics_router(runtime.telemetry))
    app.include_router(pages_router())
    app.include_router(speech_router(runtime))
    app.include_router(telephony_router(runtime, phone_calls))
    app.include_router(transcriptions_router(runtime))
    app.include_router(voices_router(runtime))
    return app


async def _start_sip(runtime: Runtime, phone_calls: PhoneCalls) -> sip_server.SipServer | None:
    """The SIP endpoint when ``sip.enabled``: bound now, or a ConfigError saying why not."""
    config = runtime.config.sip
    if not config.enabled:
        return None
    settings = sip_server.SipSettings(
        config.host,
        config.port,
        config.rtp_port_min,
        config.rtp_port_max,
        config.rtp_timeout_s,
        config.transports,
        codecs=config.codecs,
    )
    control = sip_calls.CallControl(config.webhook_url, config.webhook_secret, config.accept_timeout_s)
    server = sip_server.SipServer(
        settings,
        # A call answered at once opens with a greeting if configured; one the webhook's app accepts
        # is the app's to open (it sends response.create on the sideband socket, as with OpenAI).
        lambda model, session: runtime.sessions.admit(
            sip_server.TRANSPORT,
            model=model,
            session=session,
            greet=runtime.config.realtime.greet_phone_calls and not config.webhook_url,
        ),
        control,
        phone_calls,
    )
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(
            f"SIP port {config.port} ({'/'.join(config.transports)}) on {config.host} cannot be used ({exc.strerror}); "
            "choose another with --sip-port N or sip.port"
        ) from exc
    return server


def _registrations(runtime: Runtime, sip: sip_server.SipServer | None) -> sip_register.Registrations:
    """``sip.register``'s REGISTERs, started: they run until the server stops."""
    entries = []
    if sip is not None:
        entries = [
            sip_register.Registration(entry, sip.sender, sip.transactions, sip.message_received)
            for entry in runtime.config.sip.register
        ]
    registrations = sip_register.Registrations(entries)
    registrations.start()
    return registrations


async def _new_session(websocket: WebSocket, runtime: Runtime, model: str | None, intent: str | None) -> None:
    """``WS /v1/realtime``: a new session (``?intent=transcription``: a transcription session,
    whose turns are transcribed and never answered), with the settings of the client secret that
    opened it applied over that. Settings refused: HTTP 400 before the upgrade; the server full:
    an ``error`` event, then close 1013."""
    secret: ClientSecret | None = websocket.scope.get("state", {}).get("client_secret")
    try:
        if intent not in (None, "transcription"):
            message = f"unknown intent {intent!r}: 'transcription' (a transcription session) is the one intent"
            raise ApiError(400, message, param="intent", code="invalid_value")
        session = ({"type": "transcription"} if intent else {}) | (secret.session if secret else {})
        model = secret.model if secret and secret.model else model
        admission = runtime.sessions.admit(websocket_transport.TRANSPORT, model=model, session=session)
    except SessionConfigError as exc:
        error = ApiError(400, exc.message, param=exc.param, code=exc.code)
        await websocket.send_denial_response(error_response(error))
        return
    except ApiError as error:
        await websocket.send_denial_response(error_response(error))
        return
    except SessionRefused as refusal:
        await websocket_transport.refuse_websocket(websocket, refusal)
        runtime.telemetry.count_error("realtime", refusal.code)
        return
    with admission:
        # A browser that sent its key as a subprotocol also offers "realtime": the
        # handshake must pick one of the offered subprotocols, or the browser drops it.
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
        await websocket_transport.serve_websocket(websocket, admission.session)


async def _sideband(
    websocket: WebSocket, phone_calls: PhoneCalls, sip: sip_server.SipServer | None, call_id: str
) -> None:
    """``WS /v1/realtime?call_id=...``: a live phone call's session, SIP or carrier; any other
    id is refused before the upgrade: HTTP 404 (409 while a SIP call still rings) with an
    OpenAI-style error body."""
    call = phone_calls.get(call_id)
    if call is None:
        if sip is not None:
            error = sip.control.not_answered(call_id, "followed")
        else:
            error = CallNotFound(f"no call {call_id!r}: it ended or never existed")
        await websocket.send_denial_response(call_error_response(error))
        return
    await websocket.accept(subprotocol="realtime" if "realtime" in websocket.scope.get("subprotocols", []) else None)
    await sideband.follow_call(websocket, call)


def _install_middleware(app: FastAPI, runtime: Runtime, secrets: ClientSecretStore) -> None:
    """Middleware added later wraps what was added before: the error counter (outermost), the
    local guard (Host, Origin), CORS, API keys, then body limits."""
    upload_bytes = int(runtime.config.limits.max_upload_mb * 2**20)
    body_limits = {"/v1/audio/transcriptions": upload_bytes, "/v1/audio/speech": 1 << 20}
    voice_paths = ("/v1/voices", "/v1/voices/", "/v1/audio/voices", "/v1/audio/voices/")
    body_limits |= {path: upload_bytes for path in voice_paths}
    app.add_middleware(BodyLimitMiddleware, limits=body_limits)
    telephony = runtime.config.telephony
    # A carrier cannot send an API key: with its auth token set, its signature checks it instead.
    open_prefixes = ("/v1/telephony/twilio/",) if telephony.twilio_auth_token else ()
    app.add_middleware(
        ApiKeyMiddleware, keys=runtime.config.server.api_keys, secrets=secrets, open_prefixes=open_prefixes
    )
    if runtime.config.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(runtime.config.server.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    server = runtime.config.server
    public_host = (telephony.public_host,) if telephony.public_host else ()
    app.add_middleware(
        LocalGuardMiddleware,
        allowed_hosts=(*server.allowed_hosts, *public_host),
        cors_origins=server.cors_origins,
        check_origin=not server.api_keys,
    )
    app.add_middleware(ErrorCountingMiddleware, telemetry=runtime.telemetry)  # outermost: sees every error


def _version() -> str:
    from cosyagent import __version__

    return __version__


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "cosyagent"}
