"""The LLM fails under a live conversation, over a real socket with the official SDK.

- the embedded llama.cpp child is killed (-9) mid-reply: that reply ends with an ``error``
  naming the embedded LLM server and how it died, ``/v1/health`` says it is restarting, the
  child is restarted and the same session's next turn is answered;
- an external endpoint (``llm.engine: openai``, a fake on 127.0.0.1) refuses connections or
  accepts and never answers: an ``error`` within ``llm.timeout_s``, while another session is
  served meanwhile; nothing is left running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer
from tests.fakes.fake_llm import HANG, FakeLLM


def client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key")


async def next_event(conn: Any, kinds: set[str], timeout: float = 60.0) -> Any:
    async def wait() -> Any:
        async for event in conn:
            if event.type in kinds:
                return event
        raise AssertionError("connection closed")

    return await asyncio.wait_for(wait(), timeout)


async def wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def ask(conn: Any, text: str) -> None:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()


async def health(server: LiveServer) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer: dict[str, Any] = (await http.get(f"{server.base_url}/health", timeout=5.0)).json()
        return answer


@pytest.fixture(scope="module")
async def embedded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    config = write_config(tmp_path_factory.mktemp("embedded"), {"server": {"capacity": 4}})
    async with in_process_server(config) as server:
        yield server


async def test_the_embedded_llm_killed_mid_reply_is_reported_restarted_and_the_session_goes_on(
    embedded: LiveServer,
) -> None:
    runtime = embedded.runtime
    assert runtime.llm_server is not None
    first_pid = runtime.llm_server.pid
    assert first_pid is not None
    async with client(embedded).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await ask(conn, "Tell me a very long story about a dragon and a knight.")
        await next_event(conn, {"response.output_audio.delta"})  # the reply is being spoken
        os.kill(first_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        error = await next_event(conn, {"error"}, timeout=10)
        assert error.error.code == "engine_unavailable"
        message = error.error.message
        assert "embedded LLM server" in message and "killed by signal 9 (SIGKILL)" in message, message
        done = await next_event(conn, {"response.done"}, timeout=5)
        assert done.response.status == "failed"
        assert time.monotonic() - killed_at < 5.0
        meanwhile = await health(embedded)  # the restart waits 0.5 s before it begins
        assert meanwhile["status"] == "degraded", meanwhile
        assert meanwhile["engines"]["llm"]["state"] == "restarting"
        assert meanwhile["engines"]["llm"]["last_exit"] == "killed by signal 9 (SIGKILL)"

        # The same session's next turn is answered, by a new child.
        await ask(conn, "What is the capital of France?")
        done = await next_event(conn, {"response.done"}, timeout=120)
        assert done.response.status == "completed", done.response
        transcript = done.response.output[0].content[0].transcript
        assert transcript and transcript.strip()
    after = await health(embedded)
    assert after["status"] == "ok"
    assert after["engines"]["llm"]["state"] == "running" and after["engines"]["llm"]["restarts"] == 1
    assert after["engines"]["llm"]["pid"] not in (None, first_pid)
    assert not process_exists(first_pid)  # the dead child was reaped


@pytest.fixture(scope="module")
async def fake_llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM()
    await fake.start_listening()
    yield fake
    await fake.aclose()


@pytest.fixture(scope="module")
async def external(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM) -> AsyncIterator[LiveServer]:
    llm = {"engine": "openai", "base_url": fake_llm.base_url, "model": fake_llm.model, "timeout_s": 2.0}
    config = write_config(tmp_path_factory.mktemp("external"), {"server": {"capacity": 4}, "llm": llm})
    async with in_process_server(config) as server:
        yield server


async def text_only(conn: Any) -> None:
    await conn.session.update(
        session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
    )


async def test_a_refusing_endpoint_fails_the_reply_at_once_and_the_session_survives(
    external: LiveServer, fake_llm: FakeLLM
) -> None:
    async with client(external).realtime.connect(model="cosyagent-realtime") as conn:
        await text_only(conn)
        await fake_llm.stop_listening()
        try:
            started = time.monotonic()
            await ask(conn, "Hello there")
            error = await next_event(conn, {"error"}, timeout=10)
            assert time.monotonic() - started < 2.0
            assert error.error.code == "engine_unavailable"
            assert f"LLM endpoint {fake_llm.base_url} (model 'fake-llm') is unreachable" in error.error.message
            assert "ConnectError" in error.error.message, error.error.message
            done = await next_event(conn, {"response.done"}, timeout=5)
            assert done.response.status == "failed"
        finally:
            await fake_llm.start_listening()  # the same port again
        await ask(conn, "Hello again")
        done = await next_event(conn, {"response.done"}, timeout=10)
        assert done.response.status == "completed"
        assert "You said: Hello again" in done.response.output[0].content[0].text


async def test_a_hanging_endpoint_fails_within_the_timeout_while_another_session_is_served(
    external: LiveServer, fake_llm: FakeLLM
) -> None:
    tasks_before = len(asyncio.all_tasks())
    sdk = client(external)
    async with (
        sdk.realtime.connect(model="cosyagent-realtime") as stuck,
        sdk.realtime.connect(model="cosyagent-realtime") as other,
    ):
        await text_only(stuck)
        await text_only(other)
        started = time.monotonic()
        await ask(stuck, f"{HANG} please")
        await wait_until(lambda: fake_llm.hanging == 1, timeout=5)
        # Meanwhile another session is answered at once.
        await ask(other, "Are you there")
        done = await next_event(other, {"response.done"}, timeout=5)
        assert done.response.status == "completed"
        assert time.monotonic() - started < 1.5  # well before the stuck reply's timeout
        error = await next_event(stuck, {"error"}, timeout=10)
        waited = time.monotonic() - started
        assert 1.9 < waited < 4.0, waited  # llm.timeout_s is 2
        assert error.error.code == "engine_unavailable"
        assert "did not answer: nothing for 2 s (llm.timeout_s)" in error.error.message, error.error.message
        done = await next_event(stuck, {"response.done"}, timeout=5)
        assert done.response.status == "failed"
        await ask(stuck, "And now")  # the stuck session goes on
        done = await next_event(stuck, {"response.done"}, timeout=5)
        assert done.response.status == "completed"
    await wait_until(lambda: external.runtime.active_sessions == 0)
    await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before, timeout=10)
    assert fake_llm.hanging == 0  # the client gave up on the hung request and closed its connection


async def test_an_answer_in_chinese_twice_fails_the_spoken_reply_as_unsupported_language(
    external: LiveServer, fake_llm: FakeLLM
) -> None:
    # The fake echoes the user's Chinese ("You said: 谢谢") even when asked again for English;
    # Piper speaks English only. Not an engine failure: the error says what the voice speaks.
    async with client(external).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        requests_before = fake_llm.requests
        await ask(conn, "谢谢")
        error = await next_event(conn, {"error"}, timeout=20)
        assert error.error.code == "unsupported_language", error.error
        assert "English only, not Chinese" in error.error.message, error.error.message
        done = await next_event(conn, {"response.done"}, timeout=5)
        assert done.response.status == "failed" and done.response.status_details.error.code == "unsupported_language"
        assert fake_llm.requests - requests_before == 2  # asked once more before giving up
        await ask(conn, "Hello again")  # the session goes on, spoken
        done = await next_event(conn, {"response.done"}, timeout=20)
        assert done.response.status == "completed", done.response
        assert "You said: Hello again" in done.response.output[0].content[0].transcript


def process_exists(pid: int) -> bool:
    """A process (zombies included) with this pid."""
    return Path(f"/proc/{pid}").exists()
