"""Peers of the call-control tests: a real webhook receiver (uvicorn on 127.0.0.1) and the
SIP endpoint configured to POST to it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from openai import AsyncOpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cosyagent.config import SipConfig, load_config
from cosyagent.runtime import Runtime
from cosyagent.transports.sip_server import SipServer
from cosyagent.web.app import create_app
from tests.e2e.conftest import LiveServer, free_port, free_port_both, serve_asgi

SECRET = "whsec_" + base64.b64encode(b"a test secret of the call-control webhook").decode()
ACCEPT_TIMEOUT_S = 4.0
RTP_RANGE = (32000, 32999)


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    """Records every POST; runs ``on_event`` (its body) and answers ``status`` after ``delay_s``."""

    status: int = 200
    delay_s: float = 0.0
    on_event: Callable[[bytes], Awaitable[None]] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        self.deliveries.append(Delivery(await request.body(), dict(request.headers)))
        self._arrived.set()
        if self.on_event is not None:
            await self.on_event(self.deliveries[-1].body)
        await asyncio.sleep(self.delay_s)
        return Response(status_code=self.status)

    async def next(self, timeout_s: float = 10.0) -> Delivery:
        """The next delivery not yet taken."""
        async with asyncio.timeout(timeout_s):
            while not self.deliveries:
                self._arrived.clear()
                await self._arrived.wait()
        return self.deliveries.pop(0)


@dataclass
class ControlLive:
    server: LiveServer
    sip: SipServer
    hook: WebhookReceiver

    def sdk(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.server.base_url, api_key="unused", max_retries=0)


@contextlib.asynccontextmanager
async def control_live() -> AsyncIterator[ControlLive]:
    hook = WebhookReceiver()
    hook_port = free_port()
    config = load_config()
    server = dataclasses.replace(config.server, capacity=config.server.max_sessions)
    sip = SipConfig(
        enabled=True,
        port=free_port_both(),
        rtp_port_min=RTP_RANGE[0],
        rtp_port_max=RTP_RANGE[1],
        rtp_timeout_s=8.0,
        webhook_url=f"http://127.0.0.1:{hook_port}/hook",
        webhook_secret=SECRET,
        accept_timeout_s=ACCEPT_TIMEOUT_S,
    )
    runtime = Runtime.from_config(dataclasses.replace(config, server=server, sip=sip))
    app = create_app(runtime)
    port = free_port()
    async with serve_asgi(hook.app(), hook_port), serve_asgi(app, port):
        yield ControlLive(LiveServer(runtime, port), app.state.sip_server, hook)
