"""The OpenAI-compatible client with tools, against fake_chat_llm over a real socket: the request
carries the tools, streamed ``tool_calls`` come back as pieces, and a call a model wrote as text
is recovered (or left as text when it is not a call of ours)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from cosyagent.engines.base import ChatFinished, ToolCallDelta
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.engines.tool_text import one_call_schema
from tests.e2e.conftest import free_port, serve_asgi
from tests.fakes.fake_chat_llm import MODEL, Call, FakeChatLLM, Reply

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeChatLLM, OpenAICompatibleLLM]]:
    chat, port = FakeChatLLM(), free_port()
    async with serve_asgi(chat.app(), port):
        llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", MODEL, timeout_s=10.0)
        try:
            yield chat, llm
        finally:
            await llm.aclose()


async def test_streamed_tool_calls_come_back_as_pieces(fake: tuple[FakeChatLLM, OpenAICompatibleLLM]) -> None:
    chat, llm = fake
    chat.replies.append(Reply(text="Let me see.", calls=(Call("get_weather", '{"city": "Paris"}'),)))
    events = [e async for e in llm.stream_chat_events(QUESTION, tools=TOOLS, tool_choice="required", max_tokens=50)]
    text = "".join(e for e in events if isinstance(e, str))
    pieces = [e for e in events if isinstance(e, ToolCallDelta)]
    assert text == "Let me see."
    assert pieces[0] == ToolCallDelta(0, "", call_id="call_fake_0", name="get_weather")
    assert "".join(p.arguments for p in pieces) == '{"city": "Paris"}' and len(pieces) == 6
    assert events[-1] == ChatFinished("tool_calls")
    (request,) = chat.requests
    assert (request["tools"], request["tool_choice"], request["max_tokens"]) == (TOOLS, "required", 50)


async def test_without_tools_the_request_has_none_and_calls_written_as_text_stay_text(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    chat, llm = fake
    call_text = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
    chat.replies += [Reply(text=call_text), Reply(text=call_text), Reply(text=call_text)]
    plain = "".join([d async for d in llm.stream_chat(QUESTION)])
    assert plain == call_text and "tools" not in chat.requests[0]
    recovered = [e async for e in llm.stream_chat_events(QUESTION, tools=TOOLS)]
    assert len(recovered) == 2 and isinstance(recovered[0], ToolCallDelta)
    assert recovered[1] == ChatFinished("stop")  # (the endpoint's reason: it sent text)
    assert (recovered[0].name, json.loads(recovered[0].arguments)) == ("get_weather", {"city": "Oslo"})
    refused = [e async for e in llm.stream_chat_events(QUESTION, tools=TOOLS, tool_choice="none")]
    assert "".join(e for e in refused if isinstance(e, str)) == call_text  # tool_choice none: never a call


async def test_a_required_call_written_as_text_ends_the_stream_once_complete(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    """Under ``required`` the small model writes on past its call (repeats, other cities); the
    call is taken once its JSON closes and the stream is closed. Under ``auto`` it is read to the end."""
    chat, llm = fake
    paris, london = ({"name": "get_weather", "arguments": {"city": city}} for city in ("Paris", "London"))
    run_on = f"{json.dumps(paris)} {json.dumps(london)}"
    for choice in ("required", "auto"):
        chat.replies.append(Reply(text=run_on + " The weather in Paris is sunny." * 5, delay_s=0.01))
        events = [e async for e in llm.stream_chat_events(QUESTION, tools=TOOLS, tool_choice=choice)]
        calls = [(e.name, json.loads(e.arguments)) for e in events if isinstance(e, ToolCallDelta)]
        assert not [e for e in events if isinstance(e, str)], choice  # nothing of it is said
        if choice == "required":
            assert calls == [("get_weather", {"city": "Paris"})]
            assert events[-1] == ChatFinished("tool_calls")
            for _ in range(100):  # the endpoint sees the close a moment later
                if chat.disconnected:
                    break
                await asyncio.sleep(0.05)
            assert chat.disconnected == 1  # closed before its end
        else:
            assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})]
            assert events[-1] == ChatFinished("stop") and chat.disconnected == 1  # read to its end


async def test_a_client_that_sends_the_call_schema_sends_it_when_a_call_is_required(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    """``call_schema`` (the embedded server's client, or `llm.call_schema: true`): llama.cpp's
    ``json_schema`` of one call, beside the tools, only under ``required``; never otherwise."""
    chat, plain = fake
    schema_client = OpenAICompatibleLLM(plain.base_url, MODEL, timeout_s=10.0, call_schema=True)
    try:
        for llm, choice in ((schema_client, "required"), (schema_client, "auto"), (plain, "required")):
            chat.replies.append(Reply(calls=(Call("get_weather", '{"city": "Paris"}'),)))
            events = [e async for e in llm.stream_chat_events(QUESTION, tools=TOOLS, tool_choice=choice)]
            assert isinstance(events[0], ToolCallDelta)
        with_schema, auto, without = chat.requests
        assert with_schema["json_schema"] == one_call_schema(TOOLS) and with_schema["tool_choice"] == "required"
        assert "json_schema" not in auto and "json_schema" not in without
    finally:
        await schema_client.aclose()
