"""The OpenAI-compatible client with tools, against fake_chat_llm over a real socket: the request
carries the tools, streamed ``tool_calls`` come back as pieces, and a call a model wrote as text
is recovered (or left as text when it is not a call of ours)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from cosyagent.engines.base import ChatFinished, ToolCallDelta
from cosyagent.engines.llm import OpenAICompatibleLLM
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
