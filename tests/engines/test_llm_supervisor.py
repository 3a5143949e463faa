"""The embedded llama.cpp server dies (kill -9) under a streamed reply: the reply fails saying
so, the server is restarted (bounded), and the next reply is answered."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cosyagent.engines.base import ChatMessage, EngineUnavailableError
from cosyagent.engines.llama_server import EmbeddedLlamaServer
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.runtime.llm_supervisor import LLMSupervisor, SupervisedLLM

LONG: list[ChatMessage] = [{"role": "user", "content": "Write a very long story about a dragon."}]
QUESTION: list[ChatMessage] = [{"role": "user", "content": "What is the capital of France?"}]


async def wait_until(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def supervised() -> AsyncIterator[tuple[EmbeddedLlamaServer, LLMSupervisor, OpenAICompatibleLLM]]:
    server = EmbeddedLlamaServer(n_threads=1, n_ctx=512, parallel=1)
    await server.start()
    llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=30.0)
    supervisor = LLMSupervisor(server, llm, max_restarts=2)
    supervisor.start()
    try:
        yield server, supervisor, llm
    finally:
        await supervisor.stop()
        await llm.aclose()
        await server.stop()


async def test_a_killed_server_fails_the_reply_precisely_and_is_restarted(
    supervised: tuple[EmbeddedLlamaServer, LLMSupervisor, OpenAICompatibleLLM], caplog: pytest.LogCaptureFixture
) -> None:
    server, supervisor, llm = supervised
    chat = SupervisedLLM(llm, supervisor, wait_s=30.0)
    first_pid = server.pid
    assert first_pid is not None
    caplog.set_level(logging.INFO, logger="cosyagent")
    stream = chat.stream_chat(LONG, max_tokens=400)
    got = [await anext(stream)]
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(EngineUnavailableError) as failed:
        async for delta in stream:  # bounded: the child is dead
            got.append(delta)
    message = str(failed.value)
    assert "embedded LLM server" in message and "killed by signal 9 (SIGKILL)" in message, message
    # The supervisor's watcher notices the death on its own task, possibly after the reply failed.
    await wait_until(lambda: supervisor.health()["last_exit"] is not None, timeout=10.0)
    assert supervisor.health()["last_exit"] == "killed by signal 9 (SIGKILL)"

    # The next reply waits for the restart and is answered, by a new child.
    answer = "".join([d async for d in chat.stream_chat(QUESTION, max_tokens=16, temperature=0.0)])
    assert answer.strip()
    assert supervisor.state == "running" and supervisor.restarts == 1
    assert server.pid not in (None, first_pid) and server.running
    assert not process_exists(first_pid)  # reaped, no zombie
    logged = caplog.text
    assert "died (killed by signal 9 (SIGKILL)); restarting it" in logged
    assert "is back" in logged


async def test_past_its_restart_budget_the_server_stays_down_and_says_so(
    supervised: tuple[EmbeddedLlamaServer, LLMSupervisor, OpenAICompatibleLLM],
) -> None:
    server, supervisor, llm = supervised
    chat = SupervisedLLM(llm, supervisor, wait_s=30.0)
    for kill in range(3):  # two restarts allowed; the third death is final
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: supervisor.state != "running")
        if kill < 2:
            await wait_until(lambda: supervisor.state == "running")
    await wait_until(lambda: supervisor.state == "failed")
    assert supervisor.restarts == 2
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match=r"is down \(killed by signal 9 \(SIGKILL\)\) after 2 restarts"):
        await anext(chat.stream_chat(QUESTION, max_tokens=8))
    assert time.monotonic() - started < 1.0  # at once: no wait for a restart that will not come
    assert not server.running


def process_exists(pid: int) -> bool:
    """A process (zombies included) with this pid."""
    return Path(f"/proc/{pid}").exists()
