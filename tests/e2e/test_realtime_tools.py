"""Function calling over the Realtime API, driven by the official openai SDK over a real socket.

The deterministic cases (two calls in one response, a call cut off by the user speaking, a call
never answered) run against fake_chat_llm, a scripted OpenAI-compatible chat endpoint on
127.0.0.1 that streams tool calls exactly as chat completions does; the agent's other engines
(Whisper tiny.en, Piper, Silero) are the real ones. The last test uses the real embedded LLM
(Qwen2.5-Coder-0.5B under llama.cpp) end to end: it calls the tool and speaks the result.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from pydantic import BaseModel

from cosyagent.agent.tool_history import ANSWER_FROM_TOOLS, NO_OUTPUT
from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer, free_port, serve_asgi
from tests.e2e.realtime_client import Transcript, collect, said_to_its_end, stream_pcm24
from tests.fakes.fake_chat_llm import MODEL, Call, FakeChatLLM, Reply
from tests.support import read_clip

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {
    "type": "function",
    "name": "get_time",
    "description": "The local time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
async def fake_llm() -> AsyncIterator[tuple[FakeChatLLM, int]]:
    fake, port = FakeChatLLM(), free_port()
    async with serve_asgi(fake.app(), port):
        yield fake, port


@pytest.fixture(scope="module")
async def agent(
    fake_llm: tuple[FakeChatLLM, int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveServer]:
    _, port = fake_llm
    config = write_config(
        tmp_path_factory.mktemp("tools"),
        {
            "server": {"capacity": 4},
            "llm": {"engine": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": MODEL},
        },
    )
    async with in_process_server(config) as server:
        yield server


@pytest.fixture
def fake(fake_llm: tuple[FakeChatLLM, int]) -> FakeChatLLM:
    llm, _ = fake_llm
    llm.replies.clear()
    llm.requests.clear()
    return llm


def connect(server: LiveServer) -> Any:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key").realtime.connect(model="cosyagent-realtime")


async def say(conn: AsyncRealtimeConnection, text: str) -> None:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )


async def answer(conn: AsyncRealtimeConnection, call_id: str, output: dict[str, Any]) -> None:
    await conn.conversation.item.create(
        item={"type": "function_call_output", "call_id": call_id, "output": json.dumps(output)}
    )


def done_responses(seen: Transcript) -> list[Any]:
    return [e.response for e in seen.of_type("response.done")]


async def test_two_calls_in_one_response_then_the_agent_speaks_their_results(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies += [
        Reply(calls=(Call("get_weather", '{"city": "Paris"}'), Call("get_time", '{"city": "Paris"}'))),
        Reply(text="It is sunny in Paris, and it is ten in the morning."),
    ]
    async with connect(agent) as conn:
        await conn.session.update(session={"type": "realtime", "tools": [WEATHER, TIME], "tool_choice": "auto"})
        await say(conn, "What's the weather and the time in Paris?")
        await conn.response.create()
        seen = await collect(conn, Transcript(), until="response.done", timeout=60)
        (calls,) = done_responses(seen)
        assert calls.status == "completed"
        assert [(o.type, o.name, o.arguments, o.status) for o in calls.output] == [
            ("function_call", "get_weather", '{"city": "Paris"}', "completed"),
            ("function_call", "get_time", '{"city": "Paris"}', "completed"),
        ]
        assert not seen.of_type("response.output_audio.delta")  # a response of calls has no audio
        deltas = seen.of_type("response.function_call_arguments.delta")
        assert len(deltas) == 10 and "".join(d.delta for d in deltas if d.output_index == 0) == '{"city": "Paris"}'
        assert [e.output_index for e in seen.of_type("response.function_call_arguments.done")] == [0, 1]
        weather_id, time_id = (o.call_id for o in calls.output)

        await answer(conn, weather_id, {"sky": "sunny", "celsius": 21})
        await answer(conn, time_id, {"time": "10:00"})
        await conn.response.create()
        spoken = await collect(conn, Transcript(), until="response.done", timeout=120)

    (reply,) = done_responses(spoken)
    assert reply.status == "completed" and reply.output[0].type == "message"
    assert reply.output[0].content[0].transcript == "It is sunny in Paris, and it is ten in the morning."
    assert len(spoken.audio()) / 48000 > 1.0  # spoken by the real synthesizer
    first, second = fake.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "get_time"]
    assert first["tool_choice"] == "auto"
    assert first["tools"][0]["function"]["parameters"] == WEATHER["parameters"]
    assert second["messages"][-4:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": weather_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": time_id, "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Paris"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": weather_id, "content": '{"sky": "sunny", "celsius": 21}'},
        {"role": "tool", "tool_call_id": time_id, "content": '{"time": "10:00"}'},
        {"role": "system", "content": ANSWER_FROM_TOOLS},
    ]


async def test_the_user_speaking_over_a_call_cuts_it_off_and_the_llm_never_sees_it(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    long_arguments = json.dumps({"city": "Paris", "note": "x" * 200})
    fake.replies += [
        Reply(calls=(Call("get_weather", long_arguments),), piece_chars=2, delay_s=0.1),  # ~10 s of pieces
        Reply(text="Take the train to Dublin."),
    ]
    async with connect(agent) as conn:
        await conn.session.update(session={"type": "realtime", "tools": [WEATHER]})
        await say(conn, "What's the weather in Paris?")
        await conn.response.create()
        seen = Transcript()
        reader = asyncio.create_task(
            collect(conn, seen, until=lambda e: len(seen.of_type("response.done")) == 2, timeout=120)
        )
        while not seen.of_type("response.function_call_arguments.delta"):
            await asyncio.sleep(0.05)
            assert not reader.done()
        await stream_pcm24(conn, read_clip("en_dublin_q.wav", 24000))  # real speech: server VAD barges in
        await reader

    cut, reply = done_responses(seen)
    assert cut.status == "cancelled" and cut.status_details.reason == "turn_detected"
    (call,) = cut.output
    assert call.type == "function_call" and call.status == "incomplete"
    (args_done,) = seen.of_type("response.function_call_arguments.done")
    assert args_done.arguments == call.arguments and 0 < len(call.arguments) < len(long_arguments)
    assert reply.status == "completed"
    assert fake.disconnected >= 1  # the cut-off stream was closed, not left running
    messages = fake.requests[1]["messages"]
    assert all(m["role"] != "tool" and "tool_calls" not in m for m in messages)
    assert messages[-1]["role"] == "user" and messages[-1]["content"].strip()  # what the user said, transcribed


async def test_a_call_never_answered_goes_to_the_llm_marked_and_the_conversation_goes_on(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies += [
        Reply(calls=(Call("get_weather", '{"city": "Oslo"}'),)),
        Reply(text="Sorry, I have no weather yet."),
    ]
    async with connect(agent) as conn:
        await conn.session.update(session={"type": "realtime", "tools": [WEATHER], "output_modalities": ["text"]})
        await say(conn, "Weather in Oslo?")
        await conn.response.create()
        first = await collect(conn, Transcript(), until="response.done", timeout=60)
        call_id = done_responses(first)[0].output[0].call_id
        await say(conn, "Hello? Are you there?")  # no function_call_output: the client never answers
        await conn.response.create()
        second = await collect(conn, Transcript(), until="response.done", timeout=60)
        # A late output, and one for a call that does not exist: the latter is refused precisely.
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": "call_nope", "output": "x"}
        )
        error = await collect(conn, Transcript(), until="error", timeout=30)
    assert done_responses(second)[0].output[0].content[0].text == "Sorry, I have no weather yet."
    messages = fake.requests[1]["messages"]
    assert messages[-3:-1] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": NO_OUTPUT},
    ]
    assert messages[-1] == {"role": "user", "content": "Hello? Are you there?"}
    (refused,) = error.of_type("error")
    assert (refused.error.code, refused.error.param) == ("item_not_found", "item.call_id")


async def test_invalid_tools_get_precise_errors_and_the_session_survives(agent: LiveServer, fake: FakeChatLLM) -> None:
    async with connect(agent) as conn:
        bad_schema = {**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": "txt"}}}}
        await conn.session.update(session={"type": "realtime", "tools": [bad_schema]}, event_id="evt_tools")
        first = await collect(conn, Transcript(), until="error", timeout=30)
        await conn.session.update(
            session={"type": "realtime", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}}
        )
        second = await collect(conn, Transcript(), until="error", timeout=30)
        await conn.session.update(session={"type": "realtime", "tools": [WEATHER]})
        updated = await collect(conn, Transcript(), until="session.updated", timeout=30)
    (schema_error,) = first.of_type("error")
    assert schema_error.error.type == "invalid_request_error"
    assert (schema_error.error.param, schema_error.error.event_id) == (
        "session.tools[0].parameters.properties.city.type",
        "evt_tools",
    )
    (choice_error,) = second.of_type("error")
    assert choice_error.error.param == "session.tool_choice.name" and "get_time" in choice_error.error.message
    (session,) = updated.of_type("session.updated")
    assert [t.name for t in session.session.tools] == ["get_weather"]


@pytest.mark.timeout(1200)  # up to four replies of the real LLM: minutes each when other jobs load the CPU
async def test_the_embedded_llm_calls_a_tool_and_speaks_its_result(live_server: LiveServer) -> None:
    """The real default stack: Qwen2.5-Coder-0.5B gets the tool through its own chat template.
    It samples, and does not always call (README: measured rate), so it gets a second try, in
    a new session; asked to answer from the tool's result, it says it in words, not as JSON."""
    for attempt in range(2):
        async with connect(live_server) as conn:
            forced = {"type": "function", "name": "get_weather"}
            await conn.session.update(
                session={"type": "realtime", "tools": [WEATHER], "tool_choice": forced, "max_output_tokens": 60}
            )
            await say(conn, "What's the weather like in Paris?")
            await conn.response.create()
            calls = await collect(conn, Transcript(), until="response.done", timeout=300)
            (done,) = done_responses(calls)
            # (a forced reply that writes no call runs on to the token cap: incomplete)
            assert said_to_its_end(done), done
            found = [o for o in done.output if o.type == "function_call" and o.name == "get_weather"]
            if not found and attempt == 0:
                continue
            assert found, done.output  # what the model said instead
            assert "paris" in json.loads(found[0].arguments)["city"].lower()
            assert not calls.of_type("response.output_audio.delta")
            await answer(conn, found[0].call_id, {"city": "Paris", "sky": "sunny", "celsius": 21})
            await conn.response.create(response={"tool_choice": "none", "max_output_tokens": 40})
            spoken = await collect(conn, Transcript(), until="response.done", timeout=300)
            break
    (reply,) = done_responses(spoken)
    assert said_to_its_end(reply) and reply.output[0].type == "message"
    transcript = reply.output[0].content[0].transcript.lower()
    assert any(word in transcript for word in ("sun", "21", "twenty")) and "{" not in transcript, transcript
    assert len(spoken.audio()) / 48000 > 0.5


async def test_a_forced_function_is_called_even_where_the_embedded_llm_would_answer_in_words(
    live_server: LiveServer,
) -> None:
    """Unconstrained, the 0.5B model answered "Should I take an umbrella in Berlin?" in words in 4
    of 4 seeded tries under a forced get_weather; held to the schema of one call it calls, and the
    response ends at the call (benchmarks/results/forced-calls-2026-12-07/)."""
    arguments = await _forced_call_for_the_umbrella_question(live_server, WEATHER)
    assert "berlin" in json.loads(arguments)["city"].lower()


async def _forced_call_for_the_umbrella_question(live_server: LiveServer, tool: dict[str, Any]) -> str:
    """Ask "Should I take an umbrella in Berlin?" with ``tool`` (named get_weather) forced: the
    response is that one call, completed, with no audio; its arguments."""
    async with connect(live_server) as conn:
        forced = {"type": "function", "name": "get_weather"}
        await conn.session.update(session={"type": "realtime", "tools": [tool], "tool_choice": forced})
        await say(conn, "Should I take an umbrella in Berlin?")
        await conn.response.create()
        seen = await collect(conn, Transcript(), until="response.done", timeout=300)
    (done,) = done_responses(seen)
    assert done.status == "completed", done
    (call,) = done.output
    assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed"), done.output
    assert not seen.of_type("response.output_audio.delta")
    return str(call.arguments)


async def test_an_openai_endpoint_gets_the_call_schema_only_when_configured(
    agent: LiveServer, fake: FakeChatLLM, fake_llm: tuple[FakeChatLLM, int], tmp_path: Path
) -> None:
    """`llm.call_schema`: an `openai` endpoint is trusted to enforce a forced call itself (no
    `json_schema` by default); set true (a llama-server of your own) it is sent the schema of one
    call, as the embedded server is."""
    endpoint = f"http://127.0.0.1:{fake_llm[1]}/v1"
    config = {
        "server": {"capacity": 4},
        "llm": {"engine": "openai", "base_url": endpoint, "model": MODEL, "call_schema": True},
    }
    async with in_process_server(write_config(tmp_path, config)) as configured:
        for server in (agent, configured):
            fake.replies.append(Reply(calls=(Call("get_weather", '{"city": "Paris"}'),)))
            async with connect(server) as conn:
                forced = {"type": "function", "name": "get_weather"}
                await conn.session.update(session={"type": "realtime", "tools": [WEATHER], "tool_choice": forced})
                await say(conn, "What's the weather in Paris?")
                await conn.response.create()
                (done,) = done_responses(await collect(conn, Transcript(), until="response.done", timeout=60))
            assert [o.name for o in done.output] == ["get_weather"]
    by_default, configured_request = fake.requests
    assert by_default["tool_choice"] == configured_request["tool_choice"] == "required"
    assert "json_schema" not in by_default
    assert configured_request["json_schema"]["anyOf"][0]["properties"]["name"] == {"const": "get_weather"}


class Place(BaseModel):
    city: str
    country: Literal["IE", "FR", "DE", "GB"]


class WeatherQuery(BaseModel):
    where: Place  # pydantic writes it as a $ref to $defs.Place
    unit: Literal["celsius", "fahrenheit"]


async def test_a_forced_function_whose_parameters_use_definitions_gets_arguments_that_fit_them(
    live_server: LiveServer,
) -> None:
    """Parameters from a pydantic model refer to its nested model (`$ref`); written out in place,
    they hold the forced call to them. Sent without a schema (as before), this test failed 3 of
    11 runs: answered in words to the token cap twice, a call missing its `unit` once
    (benchmarks/results/tool-refs-2026-12-07/)."""
    parameters = WeatherQuery.model_json_schema()
    assert "$defs" in parameters  # what this test is about
    tool = {"type": "function", "name": "get_weather", "description": "Weather for a place.", "parameters": parameters}
    arguments = await _forced_call_for_the_umbrella_question(live_server, tool)
    query = WeatherQuery.model_validate_json(arguments)  # every field, of its type
    assert "berlin" in query.where.city.lower(), query


async def test_without_tools_the_llm_gets_none_and_the_reply_is_spoken_as_before(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies.append(Reply(text="Hello there, nice to meet you."))
    async with connect(agent) as conn:
        await say(conn, "Hi!")
        await conn.response.create()
        seen = await collect(conn, Transcript(), until="response.done", timeout=60)
    (reply,) = done_responses(seen)
    assert reply.status == "completed" and [o.type for o in reply.output] == ["message"]
    assert reply.output[0].content[0].transcript == "Hello there, nice to meet you."
    assert seen.of_type("response.output_item.added")[0].output_index == 0 and len(seen.audio()) > 0
    assert "tools" not in fake.requests[0] and "tool_choice" not in fake.requests[0]
