"""Client secrets with the official openai SDK, on a server that requires an API key: the
backend creates one with its key, the "page" opens sessions with the secret alone (Bearer or
the browser's subprotocol form), each starting with the configuration the secret fixed, and
bad secrets get a precise 401."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import websockets
from openai import AsyncOpenAI

from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer

KEY = "sk-backend-only"
INSTRUCTIONS = "You are the help desk of a bicycle shop."


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    config = write_config(tmp_path_factory.mktemp("secrets"), {"server": {"api_keys": [KEY]}})
    async with in_process_server(config) as live:
        yield live


def sdk(server: LiveServer, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0)


async def test_a_secret_opens_sessions_with_the_configuration_it_fixed(server: LiveServer) -> None:
    created = await sdk(server, KEY).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={"type": "realtime", "instructions": INSTRUCTIONS, "output_modalities": ["text"]},
    )
    assert created.value.startswith("ek_") and KEY not in created.value
    assert created.session.type == "realtime" and created.session.instructions == INSTRUCTIONS
    async with sdk(server, created.value).realtime.connect(model="cosyagent-realtime") as conn:
        event = await conn.recv()
        assert event.type == "session.created"
        assert event.session.instructions == INSTRUCTIONS
        assert event.session.output_modalities == ["text"]
    # The browser form: the secret as a subprotocol, "realtime" chosen by the server.
    url = f"ws://127.0.0.1:{server.port}/v1/realtime"
    offered = ["realtime", f"openai-insecure-api-key.{created.value}"]
    async with websockets.connect(url, subprotocols=offered) as socket:
        assert socket.subprotocol == "realtime"
        first = json.loads(await socket.recv())
        assert first["type"] == "session.created" and first["session"]["instructions"] == INSTRUCTIONS


async def test_a_secret_for_a_transcription_session_opens_one(server: LiveServer) -> None:
    detection = {"type": "server_vad", "silence_duration_ms": 700}
    created = await sdk(server, KEY).realtime.client_secrets.create(
        session={"type": "transcription", "audio": {"input": {"turn_detection": detection}}}
    )
    assert created.session.type == "transcription"
    async with sdk(server, created.value).realtime.connect(model="cosyagent-realtime") as conn:
        event = await conn.recv()
        assert event.type == "session.created" and event.session.type == "transcription"
        assert event.session.audio.input.turn_detection.silence_duration_ms == 700
        await conn.response.create()
        error = await conn.recv()
        assert error.type == "error" and error.error.code == "invalid_event", error


async def test_a_secret_opens_nothing_but_sessions(server: LiveServer) -> None:
    created = await sdk(server, KEY).realtime.client_secrets.create(session={"type": "realtime"})
    with pytest.raises(openai.AuthenticationError) as refused:
        await sdk(server, created.value).models.list()
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):  # a secret cannot mint secrets
        await sdk(server, created.value).realtime.client_secrets.create(session={"type": "realtime"})
    async with httpx.AsyncClient(timeout=30) as http:  # ...but it does get past auth on calls
        call = await http.post(
            f"{server.base_url}/realtime/calls",
            content="not an offer",
            headers={"Authorization": f"Bearer {created.value}", "Content-Type": "application/sdp"},
        )
    assert call.status_code == 400 and call.json()["error"]["code"] == "invalid_offer", call.text


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("ek_" + "A" * 43, "unknown client secret"),
        ("ek_short", "malformed client secret"),
    ],
)
async def test_a_bad_secret_gets_a_precise_401(server: LiveServer, secret: str, says: str) -> None:
    with pytest.raises(websockets.InvalidStatus, match="401"):  # what the SDK's connect raises
        async with sdk(server, secret).realtime.connect(model="cosyagent-realtime") as conn:
            await conn.recv()
    url = f"ws://127.0.0.1:{server.port}/v1/realtime"
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with websockets.connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]):
            pass
    error = json.loads(denied.value.response.body or b"{}")["error"]
    assert denied.value.response.status_code == 401
    assert error["code"] == "invalid_client_secret" and says in error["message"], error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"expires_after": {"anchor": "created_at", "seconds": 5}}, "expires_after.seconds"),
        ({"expires_after": {"anchor": "now"}}, "expires_after.anchor"),
        ({"session": {"type": "realtime", "output_modalities": ["video"]}}, "session.output_modalities"),
        ({"session": {"type": "realtime", "audio": {"output": {"speed": 3}}}}, "session.audio.output.speed"),
        ({"session": {"type": "translation"}}, "session.type"),
        ({"session": {"type": "transcription", "instructions": INSTRUCTIONS}}, "session.instructions"),
        ({"sesion": {}}, "sesion"),
    ],
)
async def test_a_bad_request_for_a_secret_names_the_parameter(
    server: LiveServer, body: dict[str, object], param: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.base_url}/realtime/client_secrets", json=body, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"], error


def test_an_expired_secret_is_refused_with_when_it_expired(tmp_path: Path) -> None:
    from cosyagent.web.client_secrets import ClientSecretError, ClientSecretStore

    now = [1_000_000.0]
    store = ClientSecretStore(clock=lambda: now[0])
    secret = store.issue(None, {"instructions": INSTRUCTIONS}, ttl_s=10)
    assert store.check(secret.value).session == {"instructions": INSTRUCTIONS}
    now[0] += 10
    with pytest.raises(ClientSecretError, match="expired at 1000010"):
        store.check(secret.value)
