"""The embedded llama.cpp server and the OpenAI-compatible streaming client."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cosyagent.engines.base import ChatFinished, ChatLLM, ChatMessage, EngineUnavailableError
from cosyagent.engines.llama_server import EmbeddedLlamaServer
from cosyagent.engines.llm import OpenAICompatibleLLM

QUESTION: list[ChatMessage] = [{"role": "user", "content": "What is the capital of France?"}]
LONG: list[ChatMessage] = [{"role": "user", "content": "Write a very long story about a dragon."}]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid``, zombies included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(entry.name), fields[0]))
    return found


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[EmbeddedLlamaServer]:
    srv = EmbeddedLlamaServer(n_threads=2, n_ctx=1024)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def llm(server: EmbeddedLlamaServer) -> AsyncIterator[OpenAICompatibleLLM]:
    client = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=30.0)
    yield client
    await client.aclose()


async def test_server_reports_its_model(server: EmbeddedLlamaServer, llm: OpenAICompatibleLLM) -> None:
    assert server.running
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.model == "SmolLM2-135M-Instruct.Q4_1"
    assert isinstance(llm, ChatLLM)


async def test_stream_chat_gives_text(llm: OpenAICompatibleLLM) -> None:
    started = time.perf_counter()
    first_token_s = None
    deltas = []
    async for delta in llm.stream_chat(QUESTION, max_tokens=32, temperature=0.0):
        if first_token_s is None:
            first_token_s = time.perf_counter() - started
        deltas.append(delta)
    assert all(deltas)
    assert "".join(deltas).strip()
    assert first_token_s is not None and first_token_s < 5.0


async def test_the_stream_ends_saying_why_the_llm_stopped(llm: OpenAICompatibleLLM) -> None:
    """llama-server's last chunk names its finish_reason: ``length`` when max_tokens cut the
    reply (a Realtime response then ends ``incomplete``), ``stop`` when the model ended it."""
    capped = [e async for e in llm.stream_chat_events(LONG, max_tokens=4, temperature=0.0)]
    assert capped[-1] == ChatFinished("length")
    assert all(isinstance(e, str) for e in capped[:-1]) and "".join(capped[:-1]).strip()  # type: ignore[arg-type]
    short = [{"role": "user", "content": "Say just the word yes."}]
    ended = [e async for e in llm.stream_chat_events(short, max_tokens=200, temperature=0.0)]
    assert ended[-1] == ChatFinished("stop")
    assert "yes" in "".join(e for e in ended if isinstance(e, str)).lower()


async def test_a_seed_makes_the_same_prompt_give_the_same_reply(server: EmbeddedLlamaServer) -> None:
    # llm.seed: sent with every request, so runs that are compared get the same replies.
    async def reply(seed: int) -> str:
        client = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=30.0, seed=seed)
        try:
            return "".join([d async for d in client.stream_chat(LONG, max_tokens=40, temperature=1.0)])
        finally:
            await client.aclose()

    first, again, other = await reply(7), await reply(7), await reply(8)
    assert first == again and len(first.split()) > 10
    assert other != first  # the seed, not chance, repeated it


async def test_closing_the_stream_stops_generation(server: EmbeddedLlamaServer, llm: OpenAICompatibleLLM) -> None:
    pid = server.pid
    assert pid is not None
    stream = llm.stream_chat(LONG, max_tokens=1000, temperature=0.8)
    got = 0
    async for _delta in stream:
        got += 1
        if got == 3:
            break
    await stream.aclose()

    def slot_released() -> bool:  # llama-server noticed the closed stream and freed the slot
        tail = server.stderr_tail()
        return "cancel task" in tail and "stop processing" in tail.rsplit("cancel task", 1)[1]

    deadline = time.monotonic() + 10.0  # at its next batch step (slow on a busy CPU)
    while not slot_released() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert slot_released(), server.stderr_tail()
    before = cpu_seconds(pid)
    await asyncio.sleep(1.0)
    # Generating burns ~1.8 CPU-seconds a second on 2 threads; idle is ~0.
    assert cpu_seconds(pid) - before < 0.3


async def test_closed_port_is_unavailable_quickly() -> None:
    with socket.socket() as sock:  # a port that was just free: nobody listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    client = OpenAICompatibleLLM(url, "nothing", timeout_s=5.0)
    try:
        started = time.perf_counter()
        with pytest.raises(EngineUnavailableError, match=url):
            async for _delta in client.stream_chat(QUESTION):
                pass
        assert time.perf_counter() - started < 2.0
    finally:
        await client.aclose()


async def test_stop_mid_stream_leaves_no_child_process() -> None:
    srv = EmbeddedLlamaServer(n_ctx=256)
    await srv.start()
    pid = srv.pid
    assert pid is not None
    assert any(child == pid and state != "Z" for child, state in children(os.getpid()))
    client = OpenAICompatibleLLM(srv.base_url, srv.model)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _delta in client.stream_chat(LONG, max_tokens=200):
            first_delta.set()

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first_delta.wait(), 10.0)
        started = time.perf_counter()
        await srv.stop()  # the server exits even with a stream open
        assert time.perf_counter() - started < 3.0
        with pytest.raises(EngineUnavailableError):
            await consumer
    finally:
        consumer.cancel()
        await client.aclose()
    await srv.stop()  # idempotent
    assert not srv.running
    assert all(child != pid for child, _ in children(os.getpid()))  # reaped: not even a zombie
    assert not process_exists(pid)


async def test_a_broken_model_fails_with_the_server_output(tmp_path: Path) -> None:
    junk = tmp_path / "broken.gguf"
    junk.write_bytes(b"this is not a gguf file" * 100)
    srv = EmbeddedLlamaServer(model_path=junk, startup_timeout_s=30.0)
    with pytest.raises(EngineUnavailableError, match="exited with code"):
        await srv.start()
    assert not srv.running
    assert srv.pid is None


async def test_a_missing_model_fails_before_spawning(tmp_path: Path) -> None:
    srv = EmbeddedLlamaServer(model_path=tmp_path / "absent.gguf")
    with pytest.raises(EngineUnavailableError, match="not found"):
        await srv.start()
    assert srv.pid is None
