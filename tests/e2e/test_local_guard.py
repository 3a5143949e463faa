"""A web page the user visits must not drive their local agent: Host allowlist and Origin check,
over real sockets, against the real server (default config) and against the middleware alone
(the configured variants, on a tiny app, so no second set of models loads)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from cosyagent.web.local_guard import LocalGuardMiddleware, host_name, is_local_or_ip
from tests.e2e.conftest import LiveServer, free_port, serve_asgi
from tests.support import DATA

EVIL = "https://evil.example"


@pytest.mark.parametrize(
    ("header", "name", "local"),
    [
        ("127.0.0.1:8188", "127.0.0.1", True),
        ("[::1]:8188", "::1", True),
        ("localhost", "localhost", True),
        ("app.localhost:80", "app.localhost", True),
        ("192.168.1.20:8188", "192.168.1.20", True),
        ("Attacker.Example:8188", "attacker.example", False),
        ("127.0.0.1.nip.io", "127.0.0.1.nip.io", False),
    ],
)
def test_host_names(header: str, name: str, local: bool) -> None:
    assert host_name(header) == name and is_local_or_ip(name) is local


async def test_a_rebound_host_name_is_refused(live_server: LiveServer) -> None:
    async with httpx.AsyncClient() as client:
        refused = await client.get(f"{live_server.base_url}/health", headers={"Host": "attacker.example"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "host_not_allowed"
        assert "server.allowed_hosts" in refused.json()["error"]["message"]
        for host in (f"localhost:{live_server.port}", f"127.0.0.1:{live_server.port}"):
            assert (await client.get(f"{live_server.base_url}/health", headers={"Host": host})).status_code == 200


async def test_a_cross_site_form_cannot_create_a_voice(live_server: LiveServer) -> None:
    files = {"audio": ("clip.wav", (DATA / "en_wealth_tax_q.wav").read_bytes(), "audio/wav")}
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            f"{live_server.base_url}/voices", data={"name": "stolen"}, files=files, headers={"Origin": EVIL}
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
        listed = (await client.get(f"{live_server.base_url}/voices")).json()
    assert "stolen" not in json.dumps(listed)


async def test_the_realtime_socket_refuses_other_origins_and_serves_its_own(live_server: LiveServer) -> None:
    url = f"ws://127.0.0.1:{live_server.port}/v1/realtime"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=EVIL):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    own = f"http://127.0.0.1:{live_server.port}"
    async with websockets.connect(url, origin=own) as ws:  # type: ignore[arg-type]
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
    async with websockets.connect(url) as ws:  # no Origin: not a browser (SDKs, phone bridges)
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"


async def test_a_cross_site_read_only_request_still_gets_its_answer(live_server: LiveServer) -> None:
    async with httpx.AsyncClient() as client:  # CORS, not this guard, decides what the page may read
        assert (await client.get(f"{live_server.base_url}/health", headers={"Origin": EVIL})).status_code == 200


# --- configured variants, on the middleware alone ------------------------------------------


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


async def _ok(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


@contextlib.asynccontextmanager
async def _guarded(**settings: object) -> AsyncIterator[int]:
    app = Starlette(routes=[Route("/v1/thing", _ok, methods=["GET", "POST"]), WebSocketRoute("/v1/ws", _echo)])
    port = free_port()
    async with serve_asgi(LocalGuardMiddleware(app, **settings), port):  # type: ignore[arg-type]
        yield port


async def test_configured_names_and_origins_pass() -> None:
    async with _guarded(allowed_hosts=["agent.example.org"], cors_origins=[EVIL + "/"], check_origin=True) as port:
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}/v1/thing"
            assert (await client.get(url, headers={"Host": "agent.example.org:443"})).status_code == 200
            assert (await client.get(url, headers={"Host": "other.example.org"})).status_code == 403
            assert (await client.post(url, headers={"Origin": EVIL})).status_code == 200
            assert (await client.post(url, headers={"Origin": "https://worse.example"})).status_code == 403
            assert (await client.post(url, headers={"Origin": "null"})).status_code == 403
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws", origin=EVIL) as ws:  # type: ignore[arg-type]
            assert await ws.recv() == "hello"


async def test_with_an_api_key_the_origin_is_not_checked_and_a_star_allows_any_host() -> None:
    settings = {"allowed_hosts": ["*"], "cors_origins": [], "check_origin": False}
    async with _guarded(**settings) as port, httpx.AsyncClient() as client:
        answer = await client.post(f"http://127.0.0.1:{port}/v1/thing", headers={"Origin": EVIL, "Host": "x.example"})
        assert answer.status_code == 200
