"""The voice chat page against a server with API keys, in a real Chromium (Debian's, driven by
playwright-core): the page never holds the key. Opened with no credential, its call is refused
and it says what it needs; opened from the link a backend hands out (``/#client_secret=ek_...``,
the secret minted with the key by ``POST /v1/realtime/client_secrets``), the call connects over
WebRTC, runs in the session the secret fixed, and the agent answers a typed message.

The LLM is fake_chat_llm (a scripted endpoint on 127.0.0.1 that records what it is asked, so the
test sees the instructions the secret fixed); the voice and the WebRTC stack are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.browser.test_pages import ARTIFACTS, CHROMIUM, PLAYWRIGHT, ROOT
from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer, free_port, serve_asgi
from tests.e2e.webrtc_client import loopback_candidates
from tests.fakes.fake_chat_llm import MODEL, FakeChatLLM, Reply

DRIVER = Path(__file__).resolve().parent / "drive_client_secret.mjs"
API_KEY = "sk-browser-test-key-0123456789"
INSTRUCTIONS = "You are the front desk of the Hotel Kestrel. Be brief."

pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM.exists() and PLAYWRIGHT.exists() and shutil.which("node")),
        reason="needs /usr/bin/chromium, node and node_modules/playwright-core (make test installs them)",
    ),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_candidates():
        yield


@pytest.fixture(scope="module")
async def keyed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[LiveServer, FakeChatLLM]]:
    fake, port = FakeChatLLM(), free_port()
    config = write_config(
        tmp_path_factory.mktemp("keyed"),
        {
            "server": {"api_keys": [API_KEY]},
            "llm": {"engine": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": MODEL},
        },
    )
    async with serve_asgi(fake.app(), port), in_process_server(config) as server:
        yield server, fake


async def mint_secret(server: LiveServer) -> str:
    """What the page's backend does, with the key it keeps to itself."""
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/realtime/client_secrets",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"session": {"type": "realtime", "instructions": INSTRUCTIONS}, "expires_after": {"seconds": 300}},
        )
    response.raise_for_status()
    value: str = response.json()["value"]
    return value


async def drive(base_url: str, secret: str) -> dict[str, Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    silence = ARTIFACTS / "silence-16k.wav"  # the microphone says nothing: the message is typed
    sf.write(silence, np.zeros(16000 * 5, np.float32), 16000, subtype="PCM_16")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        base_url,
        secret,
        str(silence),
        str(ARTIFACTS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=500)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    sys.stderr.write(stderr.decode(errors="replace"))
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    (ARTIFACTS / "client-secret-result.json").write_text(json.dumps(result, indent=2))
    return result


async def test_the_page_calls_a_keyed_server_with_a_client_secret_and_never_holds_the_key(
    keyed: tuple[LiveServer, FakeChatLLM],
) -> None:
    server, fake = keyed
    fake.replies.append(Reply(text="Welcome to the Hotel Kestrel."))
    secret = await mint_secret(server)
    base = f"http://127.0.0.1:{server.port}"
    result = await drive(base, secret)
    assert "failure" not in result, result.get("failure")
    assert not result["pageErrors"], result["pageErrors"]

    # Without a credential the keyed server refuses the call, and the page says what it needs.
    assert "client secret" in result["refused"]["error"] and "API key" in result["refused"]["error"]
    # With the secret: the fragment is wiped from the address, and the call runs.
    with_secret = result["withSecret"]
    assert with_secret["address"] == base + "/"
    assert "session.created" in with_secret["events"] and "response.done" in with_secret["events"]
    assert with_secret["agentSaid"].strip() == "Welcome to the Hotel Kestrel."
    # The session is the one the secret fixed: the page did not replace its instructions.
    system = fake.requests[-1]["messages"][0]  # the secret's instructions (then Piper's language rule)
    assert system["role"] == "system" and system["content"].startswith(INSTRUCTIONS + "\n"), system
    assert fake.requests[-1]["messages"][-1] == {"role": "user", "content": "Hello there!"}

    # The key is nowhere in the page, its storage or its requests; the secret went only where calls start.
    async with httpx.AsyncClient() as client:
        page_html = (await client.get(base + "/")).text
    for text in (page_html, with_secret["html"], with_secret["localStorage"], with_secret["sessionStorage"]):
        assert API_KEY not in text
    assert secret not in with_secret["localStorage"]  # kept for the tab only
    sent = [r for r in result["authorizations"] if r.get("authorization")]
    assert all(r["authorization"] == f"Bearer {secret}" for r in sent), sent
    assert {r["path"] for r in sent} >= {"/v1/realtime/calls"}
    assert all(r["path"].startswith("/v1/realtime/calls") for r in sent)
