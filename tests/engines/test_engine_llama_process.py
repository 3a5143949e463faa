"""The embedded llama.cpp server process: it must not outlive the agent (even one killed by
SIGKILL), and it runs at the CPU priority it was given."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import asyncio
from cosyagent.engines.llama_server import EmbeddedLlamaServer
async def main():
    server = EmbeddedLlamaServer(n_threads=1)
    await server.start()
    print(server.pid, flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split()[2] != "Z"


def test_llama_server_dies_with_a_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "llama.cpp server outlived its parent"
    finally:
        parent.kill()
        parent.wait()


async def test_llama_server_runs_at_the_configured_lower_priority() -> None:
    from cosyagent.engines.llama_server import EmbeddedLlamaServer

    server = EmbeddedLlamaServer(n_threads=1, nice=7)
    await server.start()
    try:
        assert server.pid is not None
        stat = Path(f"/proc/{server.pid}/stat").read_text()  # noqa: ASYNC240  (procfs: no disk I/O)
        niceness = int(stat.rsplit(")", 1)[1].split()[16])
        assert niceness == os.nice(0) + 7
    finally:
        await server.stop()


async def test_llama_server_ignores_a_port_and_host_meant_for_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """PORT=9000 make serve: the agent's PORT must not become the llama.cpp child's port."""
    from cosyagent.engines.llama_server import EmbeddedLlamaServer

    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        agent_port = spare.getsockname()[1]
    monkeypatch.setenv("PORT", str(agent_port))
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("MODEL", "/nonexistent.gguf")
    monkeypatch.setenv("LLAMA_ARG_PORT", str(agent_port))  # llama-server's own environment settings
    monkeypatch.setenv("LLAMA_ARG_HOST", "0.0.0.0")
    server = EmbeddedLlamaServer(n_threads=1)
    await server.start()
    try:
        assert server.port != agent_port and server.base_url.startswith("http://127.0.0.1:")
        with socket.socket() as probe:  # the agent's port is still free for the agent
            probe.bind(("127.0.0.1", agent_port))
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")  # noqa: ASYNC240  (procfs)
        leaked = [v for v in environ if v.startswith((b"PORT=", b"HOST=", b"MODEL=", b"LLAMA_ARG_"))]
        assert leaked == [b"LLAMA_ARG_PREFILL_ASSISTANT=false"]  # the agent's own setting only
    finally:
        await server.stop()
