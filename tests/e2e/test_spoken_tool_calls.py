"""A spoken conversation with a client tool, over both Realtime transports: the user asks
aloud (a real recording), the agent calls the client's tool, the client answers, the agent
speaks the result.

The LLM is fake_chat_llm (a scripted OpenAI-compatible endpoint on 127.0.0.1, streaming tool
calls exactly as chat completions does), so the call is certain; everything else is real:
Silero and Smart Turn end the turn, Whisper tiny.en transcribes it, Piper speaks. The clients
are the official openai SDK (WebSocket) and ``client.realtime.calls.create`` plus an aiortc
peer (WebRTC). How reliably the real embedded LLM calls a tool: test_realtime_tools.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeFunctionToolParam

from cosyagent.agent.tool_history import ANSWER_FROM_TOOLS
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect, finished_response, stream_pcm24
from tests.e2e.test_realtime_tools import agent, fake_llm
from tests.e2e.webrtc_client import accept_answer, dublin_question, loopback_candidates, make_offer
from tests.fakes.fake_chat_llm import Call, FakeChatLLM, Reply

DIRECTIONS: RealtimeFunctionToolParam = {
    "type": "function",
    "name": "get_directions",
    "description": "How to travel to a place.",
    "parameters": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
}
__all__ = ["agent", "fake_llm"]  # the scripted LLM and the agent that uses it (test_realtime_tools)

SPOKEN_RESULT = "Take the ferry from Holyhead, then the train to Dublin."
TOOL_OUTPUT = {"route": "ferry from Holyhead, then train", "hours": 4}


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_candidates():
        yield


@pytest.fixture
def fake(fake_llm: tuple[FakeChatLLM, int]) -> FakeChatLLM:
    llm, _ = fake_llm
    llm.replies[:] = [Reply(calls=(Call("get_directions", '{"to": "Dublin"}'),)), Reply(text=SPOKEN_RESULT)]
    llm.requests.clear()
    return llm


def heard_question(fake: FakeChatLLM) -> str:
    """What Whisper made of the spoken question, as the LLM was asked it."""
    return str(fake.requests[0]["messages"][-1]["content"])


def a_call(event: Any) -> bool:
    return bool(finished_response(event) and event.response.output[0].type == "function_call")


async def test_over_a_websocket_a_spoken_question_calls_the_tool_and_the_result_is_spoken(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    sdk = AsyncOpenAI(base_url=agent.base_url, api_key="test-key")
    async with sdk.realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "tools": [DIRECTIONS]})
        await stream_pcm24(conn, dublin_question(24000))
        asked = await collect(conn, Transcript(), until=a_call, timeout=90)
        call = asked.of_type("response.done")[-1].response.output[0]
        assert (call.name, json.loads(call.arguments or "")) == ("get_directions", {"to": "Dublin"})
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(TOOL_OUTPUT)}
        )
        await conn.response.create()
        spoken = await collect(conn, Transcript(), until=finished_response, timeout=120)
    reply = spoken.of_type("response.done")[-1].response
    assert reply.output[0].content[0].transcript == SPOKEN_RESULT
    assert len(spoken.audio(reply.id)) / 48000 > 1.5  # Piper spoke it: 24 kHz pcm16
    assert "dublin" in heard_question(fake).lower()
    assert fake.requests[1]["messages"][-2:] == [
        {"role": "tool", "tool_call_id": call.call_id, "content": json.dumps(TOOL_OUTPUT)},
        {"role": "system", "content": ANSWER_FROM_TOOLS},
    ]


async def test_over_webrtc_a_spoken_question_calls_the_tool_and_the_result_is_spoken(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    caller, offer = await make_offer()
    sdk = AsyncOpenAI(base_url=agent.base_url, api_key="test-key")
    try:
        answer = await sdk.realtime.calls.with_raw_response.create(
            sdp=offer, session={"type": "realtime", "tools": [DIRECTIONS]}
        )
        assert answer.status_code == 201
        await accept_answer(caller, answer.text)
        await caller.wait_for("session.created", timeout=20)
        caller.microphone.say(dublin_question(48000))
        done = await caller.wait_for(
            lambda e: e["type"] == "response.done" and e["response"]["output"][0]["type"] == "function_call", 90
        )
        call = done["response"]["output"][0]
        assert (call["name"], json.loads(call["arguments"])) == ("get_directions", {"to": "Dublin"})
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps(TOOL_OUTPUT)}
        caller.send({"type": "conversation.item.create", "item": output})
        caller.send({"type": "response.create"})
        await caller.wait_for("output_audio_buffer.started", timeout=60)
        reply = await caller.wait_for(
            lambda e: e["type"] == "response.done" and e["response"]["output"][0]["type"] == "message", 120
        )
        await caller.wait_for("output_audio_buffer.stopped", timeout=60)
        assert reply["response"]["status"] == "completed"
        assert reply["response"]["output"][0]["content"][0]["transcript"] == SPOKEN_RESULT
        assert caller.voiced_seconds(after=caller.time_of("output_audio_buffer.started")) > 1.0  # heard on the track
    finally:
        await caller.close()
    assert "dublin" in heard_question(fake).lower()
