"""Bad input, vanishing clients and a dead LLM endpoint, over a real socket with the official SDK.

Each case must end in a precise ``error`` event (or a clean close), keep the session or
the server serving, and leak no task or thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI, NotFoundError

from cosyagent.engines.llama_server import EmbeddedLlamaServer
from cosyagent.engines.llm import OpenAICompatibleLLM
from tests.e2e.conftest import LiveServer, configured, free_port
from tests.e2e.realtime_client import Transcript, collect, said_to_its_end, stream_pcm24
from tests.support import read_clip


def client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key")


async def next_event(conn: Any, kinds: set[str], timeout: float = 20.0) -> Any:
    async def wait() -> Any:
        async for event in conn:
            if event.type in kinds:
                return event
        raise AssertionError("connection closed")

    return await asyncio.wait_for(wait(), timeout)


async def wait_until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{this is not json", "invalid_json"),
        ('{"type": "session.dance", "event_id": "evt_x"}', "invalid_event"),
        ('{"type": "input_audio_buffer.append", "audio": "%%% not base64 %%%"}', "invalid_base64"),
        ('{"type": "input_audio_buffer.append", "audio": "' + "A" * 800_000 + '"}', "audio_chunk_too_large"),
        (
            '{"type": "session.update", "session": '
            '{"type": "realtime", "audio": {"input": {"format": {"type": "audio/flac"}}}}}',
            "invalid_value",
        ),
        (
            '{"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "nope"}}}}',
            "invalid_value",
        ),
    ],
)
async def test_bad_events_get_an_error_and_the_connection_stays_usable(
    live_server: LiveServer, raw: str, code: str
) -> None:
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await next_event(conn, {"session.created"})
        await conn.send_raw(raw)
        error = await next_event(conn, {"error"})
        assert error.error.code == code
        assert error.error.message
        if "evt_x" in raw:
            assert error.error.event_id == "evt_x"
        await conn.session.update(session={"type": "realtime", "instructions": "still here?"})
        updated = await next_event(conn, {"session.updated"})
        assert updated.session.instructions == "still here?"


async def test_a_speed_the_voice_cannot_speak_at_is_refused_at_the_update(live_server: LiveServer) -> None:
    """Piper speaks at 0.5-2x: 3x is refused by session.update itself (it used to be accepted, and
    then every reply failed with a server error); a speed in range is taken and spoken at."""
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await next_event(conn, {"session.created"})
        await conn.session.update(session={"type": "realtime", "audio": {"output": {"speed": 3.0}}})
        error = await next_event(conn, {"error"})
        assert (error.error.code, error.error.param) == ("invalid_value", "session.audio.output.speed")
        assert "between 0.5 and 2" in error.error.message
        fast = {"type": "realtime", "audio": {"input": {"turn_detection": None}, "output": {"speed": 1.5}}}
        await conn.session.update(session=fast)  # type: ignore[arg-type]
        assert (await next_event(conn, {"session.updated"})).session.audio.output.speed == 1.5
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
        )
        await conn.response.create()
        done = await next_event(conn, {"response.done"}, timeout=60)
        assert done.response.status in ("completed", "incomplete"), done.response.status_details


async def test_response_create_while_one_is_running_is_refused(live_server: LiveServer) -> None:
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}
        )
        await conn.response.create()
        await next_event(conn, {"response.created"})
        await conn.response.create(event_id="evt_twice")
        error = await next_event(conn, {"error"})
        assert error.error.code == "conversation_already_has_active_response"
        assert error.error.event_id == "evt_twice"
        await conn.response.cancel()
        done = await next_event(conn, {"response.done"})
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"


async def test_a_client_vanishing_mid_reply_leaks_nothing(live_server: LiveServer) -> None:
    runtime = live_server.runtime

    async def one_turn(vanish: bool) -> None:
        conn = await client(live_server).realtime.connect(model="cosyagent-realtime").enter()
        sender = asyncio.create_task(stream_pcm24(conn, read_clip("en_dublin_q.wav", 24000)))
        until = "response.output_audio.delta" if vanish else "response.done"
        await collect(conn, Transcript(), until=until, timeout=90)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if vanish:  # drop the TCP connection mid-reply, without a close frame
            conn._connection.transport.abort()  # type: ignore[attr-defined]
        else:
            await conn.close()

    await one_turn(vanish=False)  # warm up: engine threads exist from here on
    await wait_until(lambda: runtime.active_sessions == 0)
    tasks_before = len(asyncio.all_tasks())
    threads_before = threading.active_count()

    await one_turn(vanish=True)
    await wait_until(lambda: runtime.active_sessions == 0)
    await wait_until(lambda: runtime.asr.queue_depth == 0 and runtime.tts.queue_depth == 0)
    await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before)
    assert threading.active_count() <= threads_before
    # ...and the server still serves a full conversation.
    await one_turn(vanish=False)


async def test_an_unreachable_llm_gives_an_error_and_the_session_survives(live_server: LiveServer) -> None:
    runtime = live_server.runtime
    working_llm = runtime.llm
    port = free_port()
    runtime.llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "SmolLM2-135M-Instruct.Q4_1", timeout_s=5)
    revived = EmbeddedLlamaServer(port=port, n_threads=1)
    try:
        async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello?"}]}
            )
            await conn.response.create()
            error = await next_event(conn, {"error"})
            assert error.error.code == "engine_unavailable"
            assert f"127.0.0.1:{port}" in error.error.message
            done = await next_event(conn, {"response.done"})
            assert done.response.status == "failed"
            await revived.start()  # the endpoint comes back: the same session goes on
            await conn.response.create()
            done = await next_event(conn, {"response.done"}, timeout=60)
            assert said_to_its_end(done.response)
    finally:
        runtime.llm = working_llm
        await revived.stop()


async def test_the_session_limit_refuses_politely(live_server: LiveServer) -> None:
    with configured(live_server.runtime, "server", max_sessions=0):
        async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
            error = await next_event(conn, {"error"})
            assert error.error.code == "session_limit"


async def test_health_and_models(live_server: LiveServer) -> None:
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{live_server.base_url}/health")).json()
    assert health["status"] == "ok"
    assert all(engine["loaded"] for engine in health["engines"].values())
    assert health["engines"]["tts"]["voices"] == ["joe"]
    assert health["versions"]["faster-whisper"]
    models = await client(live_server).models.list()
    ids = [model.id for model in models.data]
    assert "cosyagent-realtime" in ids and "moonshine-base-en" in ids and "piper-en_US-joe-medium" in ids
    for model_id in ids:  # the LLM's id included
        assert (await client(live_server).models.retrieve(model_id)).id == model_id
    with pytest.raises(NotFoundError) as missing:
        await client(live_server).models.retrieve("gpt-4o-realtime-preview")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert "'gpt-4o-realtime-preview' does not exist" in missing.value.message


async def test_a_client_of_the_beta_api_is_told_the_ga_names_and_still_served(live_server: LiveServer) -> None:
    url = f"ws://127.0.0.1:{live_server.port}/v1/realtime?model=gpt-4o-realtime-preview"
    async with websockets.connect(url, additional_headers={"OpenAI-Beta": "realtime=v1"}) as socket:
        assert json.loads(await socket.recv())["type"] == "session.created"
        beta_session = {"modalities": ["text"], "voice": "alloy", "input_audio_format": "pcm16"}
        await socket.send(json.dumps({"type": "session.update", "session": beta_session}))
        error = json.loads(await socket.recv())["error"]
        assert (error["code"], error["param"]) == ("unknown_parameter", "session.input_audio_format")
        assert "this server speaks the GA API: 'session.audio.input.format'" in error["message"]
        await socket.send(json.dumps({"type": "response.create", "response": {"modalities": ["text"]}}))
        error = json.loads(await socket.recv())["error"]
        assert error["param"] == "response.modalities" and "'response.output_modalities'" in error["message"]
        await socket.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
        assert json.loads(await socket.recv())["type"] == "session.updated"  # the GA name is taken at once


async def test_a_misspelt_event_field_is_refused_and_the_session_goes_on(live_server: LiveServer) -> None:
    url = f"ws://127.0.0.1:{live_server.port}/v1/realtime?model=cosyagent-realtime"
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    async with websockets.connect(url) as socket:
        assert json.loads(await socket.recv())["type"] == "session.created"
        await socket.send(json.dumps({"type": "conversation.item.create", "previous_id": "root", "item": item}))
        error = json.loads(await socket.recv())
        assert error["type"] == "error", error
        assert (error["error"]["code"], error["error"]["param"]) == ("unknown_parameter", "previous_id")
        await socket.send(json.dumps({"type": "conversation.item.create", "previous_item_id": "root", "item": item}))
        added = json.loads(await socket.recv())
        assert added["type"] == "conversation.item.added" and added["previous_item_id"] is None, added


async def test_binary_frames_are_refused_with_an_error(live_server: LiveServer) -> None:
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await next_event(conn, {"session.created"})
        await conn.send_raw(base64.b64decode("AAEC"))
        error = await next_event(conn, {"error"})
        assert error.error.code == "invalid_json"


async def test_a_flooding_client_is_refused_then_let_go_and_others_are_served(live_server: LiveServer) -> None:
    """1,000 malformed events at once: past the event budget (100/s after a burst of 200) they
    are dropped unread and the client is told why (and disconnected if 200 more arrive in a row,
    which a busy server reading the flood slowly may never see); another session on the same
    server answers as usual throughout."""
    sdk = client(live_server)
    async with (
        sdk.realtime.connect(model="cosyagent-realtime") as flooder,
        sdk.realtime.connect(model="cosyagent-realtime") as bystander,
    ):
        await next_event(flooder, {"session.created"})
        await next_event(bystander, {"session.created"})
        with contextlib.suppress(websockets.ConnectionClosed):  # the server may hang up mid-flood
            for _ in range(1000):
                await flooder.send_raw("{not json")
        codes: list[str] = []

        async def read_until_closed_or_quiet() -> None:
            with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
                while True:  # a busy server may read the flood slowly enough to refill the budget
                    event = await asyncio.wait_for(flooder.recv(), 10)
                    if event.type == "error":
                        codes.append(event.error.code)

        await asyncio.wait_for(read_until_closed_or_quiet(), 60)
        assert "rate_limit_exceeded" in codes, codes[-5:]  # told why its events were dropped
        assert codes.count("invalid_json") < 900, len(codes)  # most of the flood was dropped unread
        began = time.monotonic()
        await bystander.session.update(session={"type": "realtime", "instructions": "still served?"})
        assert (await next_event(bystander, {"session.updated"})).session.instructions == "still served?"
        assert time.monotonic() - began < 5.0


async def test_audio_sent_far_faster_than_real_time_is_refused(live_server: LiveServer) -> None:
    """120 s of audio in 24 appends at once: the first 60 s (the burst) are taken, the rest is
    refused with a precise error, and the session stays usable."""
    five_seconds = base64.b64encode(bytes(5 * 24_000 * 2)).decode()  # pcm16 24 kHz silence
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await next_event(conn, {"session.created"})
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await next_event(conn, {"session.updated"})
        for _ in range(24):
            await conn.input_audio_buffer.append(audio=five_seconds)
        error = await next_event(conn, {"error"})
        assert error.error.code == "input_audio_rate_exceeded" and "real time" in error.error.message
        await conn.input_audio_buffer.clear()
        await next_event(conn, {"input_audio_buffer.cleared"})


async def test_an_item_can_be_retrieved_and_an_unknown_one_is_not_found(live_server: LiveServer) -> None:
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await conn.conversation.item.create(
            item={
                "id": "item_kept",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Remember me."}],
            }
        )
        await next_event(conn, {"conversation.item.added"})
        await conn.conversation.item.retrieve(item_id="item_kept")
        retrieved = await next_event(conn, {"conversation.item.retrieved"})
        assert retrieved.item.id == "item_kept" and retrieved.item.content[0].text == "Remember me."
        await conn.conversation.item.retrieve(item_id="item_gone", event_id="evt_gone")
        error = await next_event(conn, {"error"})
        assert (error.error.code, error.error.param, error.error.event_id) == ("item_not_found", "item_id", "evt_gone")


async def test_a_conversation_longer_than_the_llm_context_is_answered_from_its_recent_part(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Twelve long messages (~3000 tokens) against the embedded server's 2048-token slots: the
    reply reads the newer half and is answered (it used to fail with the server's refusal), and
    the session goes on."""
    monologue = (
        "So yesterday I went to the market and looked at the vegetables, and the man there told me the "
        "tomatoes were grown locally, which surprised me because I always thought they came from abroad. "
    ) * 5
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        text_only = {"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
        await conn.session.update(session=text_only)  # type: ignore[arg-type]
        await next_event(conn, {"session.updated"})
        for turn in range(12):
            words = [{"type": "input_text", "text": f"{monologue} {turn}"}]
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": words})  # type: ignore[arg-type]
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is 2 + 2?"}]}
        )
        await conn.response.create()
        done = await next_event(conn, {"response.done"}, timeout=120)
        assert done.response.status in ("completed", "incomplete"), done.response.status_details
    assert any("longer than the LLM's context" in r.getMessage() for r in caplog.records)
