"""SIGTERM (or Ctrl-C's SIGINT) to `cosyagent serve` (a real child process) with sessions open and a reply in flight:
each client is told (an ``error`` with ``server_shutting_down``, the reply ``failed``) and its
socket closes with 1001; a speech request in flight finishes; the llama.cpp child is stopped;
the process exits 0 within a bounded time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.e2e.audio_server import write_config
from tests.e2e.conftest import free_port

WORKTREE = Path(__file__).resolve().parents[2]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    config = write_config(tmp_path, {"server": {"capacity": 4, "drain_timeout_s": 20}})
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(WORKTREE)}
    env.pop("COSYAGENT_API_KEYS", None)
    command = [sys.executable, "-m", "cosyagent.cli", "serve", "--config", str(config), "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not _healthy(port):
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield process, port, log_path
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


async def events_until_closed(ws: Any, timeout: float) -> tuple[list[dict[str, Any]], int | None]:
    """Every event the server sends until it closes the socket, and the close code."""
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            async for message in ws:
                events.append(json.loads(message))
    except websockets.ConnectionClosed:
        pass
    return events, ws.close_code


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_tells_every_session_stops_the_llm_and_exits_0(
    serve: tuple[subprocess.Popen[bytes], int, Path], stop_signal: signal.Signals
) -> None:
    process, port, log_path = serve
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"http://127.0.0.1:{port}/v1/health")).json()
    llm_pid = health["engines"]["llm"]["pid"]
    assert llm_pid and process_exists(llm_pid)
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=cosyagent-realtime"
    async with websockets.connect(url) as talking, websockets.connect(url) as idle:
        for ws in (talking, idle):
            assert json.loads(await ws.recv())["type"] == "session.created"
        question = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Tell a long story."}],
        }
        await talking.send(json.dumps({"type": "conversation.item.create", "item": question}))
        await talking.send(json.dumps({"type": "response.create"}))
        async with asyncio.timeout(60):
            while json.loads(await talking.recv())["type"] != "response.output_audio.delta":
                pass  # the reply is being spoken
        async with httpx.AsyncClient(timeout=30) as http:
            body = {
                "model": "tts-1",
                "voice": "joe",
                "response_format": "pcm",
                "input": "This sentence is spoken while the server stops.",
            }
            async with http.stream("POST", f"http://127.0.0.1:{port}/v1/audio/speech", json=body) as speech:
                assert speech.status_code == 200
                process.send_signal(stop_signal)
                signalled = time.monotonic()
                audio = b"".join([chunk async for chunk in speech.aiter_bytes()])
        talked, talking_code = await events_until_closed(talking, timeout=15)
        heard, idle_code = await events_until_closed(idle, timeout=15)
    assert len(audio) > 24000 * 2  # the speech request in flight was finished (the stream ended cleanly)

    errors = [e for e in talked if e["type"] == "error"]
    assert errors and errors[0]["error"]["code"] == "server_shutting_down", talked[-5:]
    assert "shutting down" in errors[0]["error"]["message"]
    done = [e for e in talked if e["type"] == "response.done"]
    assert done and done[-1]["response"]["status"] == "failed"
    assert talking_code == 1001
    assert [e["error"]["code"] for e in heard if e["type"] == "error"] == ["server_shutting_down"]
    assert idle_code == 1001

    code = await asyncio.to_thread(process.wait, 30)
    took = time.monotonic() - signalled
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert took < 30, (took, log[-3000:])  # drain_timeout_s 20 bounds the HTTP request; the rest is quick
    assert not process_exists(llm_pid), "the llama.cpp child outlived the agent"
    assert "ended 2 session(s)" in log and f"llama.cpp server pid {llm_pid} stopped" in log, log[-3000:]


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
