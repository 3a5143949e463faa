"""A real cosyagent server on 127.0.0.1 with the real embedded models, shared by the e2e tests.

It runs in the tests' own event loop (uvicorn in-process), so tests can count the
server's tasks and threads before and after a client misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from cosyagent.config import load_config
from cosyagent.runtime import Runtime
from cosyagent.web.app import create_app
from tests.e2e.conformance import mismatches, record_server_events


@dataclass
class LiveServer:
    runtime: Runtime
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def llama_slots(self) -> list[dict[str, Any]]:
        """The embedded llama-server's own view of its slots (``GET /slots``: each one's id, last task...)."""
        server = self.runtime.llm_server
        assert server is not None, "the embedded LLM is not running"
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.get(f"{server.base_url.rstrip('/').removesuffix('/v1')}/slots")
        response.raise_for_status()
        slots: list[dict[str, Any]] = response.json()
        return slots


@contextlib.contextmanager
def configured(runtime: Runtime, section: str, **changes: Any) -> Iterator[None]:
    """``changes`` to one section of the live server's config for the block (settings read per
    session or call, e.g. ``configured(runtime, "webrtc", max_calls=0)``), the shipped config after it."""
    shipped = runtime.config
    changed = dataclasses.replace(getattr(shipped, section), **changes)
    runtime.config = dataclasses.replace(shipped, **{section: changed})
    try:
        yield
    finally:
        runtime.config = shipped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_idle(runtime: Runtime) -> None:
    """Wait (up to 10 s) until ``runtime`` is idle: no session open, no engine job running or
    waiting (what a capacity measurement waits for)."""
    for _ in range(100):
        if runtime.idle():
            return
        await asyncio.sleep(0.1)


def free_port_both() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


@contextlib.asynccontextmanager
async def serve_in_process(runtime: Runtime, port: int) -> AsyncIterator[LiveServer]:
    """The cosyagent app in the current event loop, on 127.0.0.1:``port``, until the block ends."""
    async with serve_asgi(create_app(runtime), port):
        yield LiveServer(runtime, port)


@contextlib.asynccontextmanager
async def serve_asgi(app: ASGIApp, port: int) -> AsyncIterator[None]:
    """uvicorn serving ``app`` in the current event loop, on 127.0.0.1:``port``, until the block ends."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=16 << 20, ws_ping_interval=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(1200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.1)
        if not server.started:
            task.result()  # surfaces the startup error
            raise RuntimeError("server did not start in 120 s")
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def live_server() -> AsyncIterator[LiveServer]:
    """The default configuration, but admitting up to ``max_sessions``: tests that hold several
    sessions at once must not depend on what the shared CPU measured (``capacity: auto`` still
    measures, in ``runtime.capacity.estimate``; test_admission sets the capacity it tests)."""
    config = load_config()
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, capacity=config.server.max_sessions))
    async with serve_in_process(Runtime.from_config(config), free_port()) as server:
        yield server


@pytest.fixture(autouse=True)
def server_events_follow_the_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every Realtime event an in-process server sends during a test must validate against
    openai-python's own models (tests/e2e/conformance.py); a mismatch fails that test."""
    with record_server_events(monkeypatch) as events:
        yield
    problems = mismatches(events)
    if problems:
        pytest.fail(f"{len(problems)} server event(s) the openai SDK's models reject:\n" + "\n".join(problems[:10]))
