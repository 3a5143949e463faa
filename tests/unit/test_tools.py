"""Function calling in the sans-I/O Realtime core, driven with plain dicts: tools in session.update
and response.create, the LLM's tool-call pieces becoming function_call items, the client's
function_call_output, and what the LLM sees of it all. Every event the core sends is parsed with
openai-python's own server-event models."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from cosyagent.agent.events import Action, CancelResponse, Send, StartResponse
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import SessionConfig
from cosyagent.agent.tool_history import ANSWER_FROM_TOOLS, NO_OUTPUT
from cosyagent.engines.base import ToolCallDelta
from cosyagent.engines.tool_text import TextToolCalls, one_call_schema
from cosyagent.engines.vad import SileroVAD

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    engine = SileroVAD()
    engine.load()
    return engine


def make_core(vad: SileroVAD, modality: str = "text") -> RealtimeCore:
    config = SessionConfig(
        model="test", instructions="Be brief.", voice="jf_alpha", turn_detection=None, output_modalities=(modality,)
    )  # type: ignore[arg-type]
    return RealtimeCore(config, vad=vad.new_stream(), tts_sample_rate=24000, voice_exists=lambda v: True)


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    events = [a.event for a in actions if isinstance(a, Send)]
    for event in events:
        SERVER_EVENT.validate_python(event)  # the shape openai-python expects, or a ValidationError
    return events


def types(actions: list[Action]) -> list[str]:
    return [e["type"] for e in sent(actions)]


def error_of(actions: list[Action]) -> dict[str, Any]:
    (event,) = sent(actions)
    assert event["type"] == "error", event
    return dict(event["error"])


def start(core: RealtimeCore, response: dict[str, Any] | None = None) -> StartResponse:
    actions = core.receive({"type": "response.create", **({"response": response} if response else {})})
    starts = [a for a in actions if isinstance(a, StartResponse)]
    assert len(starts) == 1, sent(actions)
    return starts[0]


def ask(core: RealtimeCore, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    assert types(core.receive({"type": "conversation.item.create", "item": item}))[0] == "conversation.item.added"


def with_tools(vad: SileroVAD, *tools: dict[str, Any], modality: str = "text") -> RealtimeCore:
    core = make_core(vad, modality)
    (updated,) = sent(core.receive({"type": "session.update", "session": {"type": "realtime", "tools": list(tools)}}))
    assert updated["type"] == "session.updated"
    return core


def test_session_tools_are_echoed_and_offered_to_the_llm_in_chat_form(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER, TIME)
    session = core.config.to_dict(core.session_id)
    assert session["tools"] == [{**TIME, "description": ""} if t is TIME else t for t in (WEATHER, TIME)]
    assert session["tool_choice"] == "auto"
    ask(core, "Weather in Paris?")
    begun = start(core)
    assert begun.tool_choice == "auto"
    assert begun.tools[0] == {
        "type": "function",
        "function": {k: v for k, v in WEATHER.items() if k != "type"},
    }
    assert [t["function"]["name"] for t in begun.tools] == ["get_weather", "get_time"]


def test_a_forced_function_is_offered_alone_as_required(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER, TIME)
    begun = start(core, {"tool_choice": {"type": "function", "name": "get_time"}})
    assert begun.tool_choice == "required"
    assert [t["function"]["name"] for t in begun.tools] == ["get_time"]


@pytest.mark.parametrize(
    ("tools", "choice", "param", "code"),
    [
        ([{**WEATHER, "parameters": {"type": "objekt"}}], None, "session.tools[0].parameters.type", "invalid_value"),
        ([{**WEATHER, "parameters": {"type": "string"}}], None, "session.tools[0].parameters.type", "invalid_value"),
        (
            [{**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": "text"}}}}],
            None,
            "session.tools[0].parameters.properties.city.type",
            "invalid_value",
        ),
        (
            [{**WEATHER, "parameters": {"type": "object", "properties": {}, "required": ["city"]}}],
            None,
            "session.tools[0].parameters.required",
            "invalid_value",
        ),
        ([{**WEATHER, "parameters": "city"}], None, "session.tools[0].parameters", "invalid_value"),
        ([{**WEATHER, "name": "get weather"}], None, "session.tools[0].name", "invalid_value"),
        ([WEATHER, WEATHER], None, "session.tools[1].name", "invalid_value"),
        ([{**WEATHER, "strict": True}], None, "session.tools[0].strict", "unknown_parameter"),
        ([{"type": "mcp", "server_label": "x"}], None, "session.tools[0].type", "unsupported_parameter"),
        ("get_weather", None, "session.tools", "invalid_value"),
        ([WEATHER], {"type": "function", "name": "get_time"}, "session.tool_choice.name", "invalid_value"),
        ([WEATHER], "sometimes", "session.tool_choice", "invalid_value"),
        ([], "required", "session.tool_choice", "invalid_value"),
    ],
)
def test_invalid_tools_are_refused_with_the_param_and_the_session_goes_on(
    vad: SileroVAD, tools: Any, choice: Any, param: str, code: str
) -> None:
    core = make_core(vad)
    before = core.config
    session: dict[str, Any] = {"type": "realtime", "tools": tools}
    if choice is not None:
        session["tool_choice"] = choice
    error = error_of(core.receive({"type": "session.update", "session": session, "event_id": "e1"}))
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error",
        code,
        param,
        "e1",
    )
    assert error["message"]
    assert core.config == before


def test_response_create_checks_its_tool_choice_against_the_tools_it_gets(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER)
    error = error_of(
        core.receive({"type": "response.create", "response": {"tool_choice": {"type": "function", "name": "nope"}}})
    )
    assert (error["code"], error["param"]) == ("invalid_value", "response.tool_choice.name")
    assert "get_weather" in error["message"]
    error = error_of(core.receive({"type": "response.create", "response": {"tools": [{**WEATHER, "parameters": []}]}}))
    assert error["param"] == "response.tools[0].parameters"
    begun = start(core, {"tools": [TIME], "tool_choice": "required"})  # the response's own tools replace the session's
    assert [t["function"]["name"] for t in begun.tools] == ["get_time"] and begun.tool_choice == "required"


def call_pieces(core: RealtimeCore, response_id: str, index: int, name: str, *arguments: str) -> list[Action]:
    actions = core.response_tool_call(response_id, ToolCallDelta(index, arguments[0], call_id="llm-id", name=name))
    for piece in arguments[1:]:
        actions += core.response_tool_call(response_id, ToolCallDelta(index, piece))
    return actions


def test_a_call_streams_as_a_function_call_item_and_the_response_completes_without_a_message(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER, modality="audio")
    ask(core, "Weather in Paris?")
    created = core.receive({"type": "response.create"})
    assert types(created) == ["response.created"]  # the message item waits for content
    begun = next(a for a in created if isinstance(a, StartResponse))
    streamed = call_pieces(core, begun.response_id, 0, "get_weather", '{"city"', ': "Par', 'is"}')
    assert types(streamed) == [
        "response.output_item.added",
        "conversation.item.added",
        *["response.function_call_arguments.delta"] * 3,
    ]
    added = sent(streamed)[0]["item"]
    assert (added["type"], added["name"], added["status"], added["arguments"]) == (
        "function_call",
        "get_weather",
        "in_progress",
        "",
    )
    call_id = added["call_id"]
    assert call_id.startswith("call_") and call_id != "llm-id"  # ours: unique in the session
    finished = core.response_tool_call(begun.response_id, None)
    assert types(finished) == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
    ]
    done_args = sent(finished)[0]
    assert (done_args["arguments"], done_args["name"], done_args["call_id"], done_args["output_index"]) == (
        '{"city": "Paris"}',
        "get_weather",
        call_id,
        0,
    )
    ended = core.response_finished(begun.response_id)
    assert types(ended) == ["response.done"]
    response = sent(ended)[-1]["response"]
    assert response["status"] == "completed"
    assert [(o["type"], o["status"], o["arguments"]) for o in response["output"]] == [
        ("function_call", "completed", '{"city": "Paris"}')
    ]
    assert [it.type for it in core.conversation] == ["message", "function_call"]  # no empty assistant message


def test_two_calls_in_one_response_then_outputs_then_a_spoken_answer(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER, TIME)
    ask(core, "Weather in Paris and the time?")
    begun = start(core)
    actions = call_pieces(core, begun.response_id, 0, "get_weather", '{"city": "Paris"}')
    actions += call_pieces(core, begun.response_id, 1, "get_time", "{}")
    actions += core.response_tool_call(begun.response_id, None) + core.response_finished(begun.response_id)
    output = sent(actions)[-1]["response"]["output"]
    assert [o["name"] for o in output] == ["get_weather", "get_time"]
    assert [e["output_index"] for e in sent(actions) if e["type"] == "response.output_item.added"] == [0, 1]
    weather_id, time_id = (o["call_id"] for o in output)

    for call_id, result in ((time_id, '{"time": "10:00"}'), (weather_id, '{"sky": "sunny"}')):
        item = {"type": "function_call_output", "call_id": call_id, "output": result}
        added = sent(core.receive({"type": "conversation.item.create", "item": item}))
        assert added[0]["item"]["type"] == "function_call_output" and added[0]["item"]["call_id"] == call_id
    follow_up = start(core)
    assert follow_up.messages[1:] == [
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": weather_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": time_id, "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": weather_id, "content": '{"sky": "sunny"}'},  # in call order
        {"role": "tool", "tool_call_id": time_id, "content": '{"time": "10:00"}'},
        {"role": "system", "content": ANSWER_FROM_TOOLS},  # this response answers from them
    ]
    actions = core.response_text(follow_up.response_id, "It is sunny.")
    assert types(actions)[:3] == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    done = sent(core.response_tool_call(follow_up.response_id, None) + core.response_finished(follow_up.response_id))
    assert done[-1]["response"]["output"][0]["content"][0]["text"] == "It is sunny."


def test_an_unanswered_call_reaches_the_llm_marked_until_its_output_comes(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER)
    ask(core, "Weather in Paris?")
    begun = start(core)
    call_pieces(core, begun.response_id, 0, "get_weather", '{"city": "Paris"}')
    output = sent(core.response_tool_call(begun.response_id, None) + core.response_finished(begun.response_id))
    call_id = output[-1]["response"]["output"][0]["call_id"]
    ask(core, "Hello?")  # the user speaks again before the client answered the call
    waiting = start(core)
    assert waiting.messages[2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": NO_OUTPUT},
        {"role": "user", "content": "Hello?"},  # no request to answer from the tools: the user spoke since
    ]
    core.response_text(waiting.response_id, "Still checking.")
    core.response_tool_call(waiting.response_id, None)
    core.response_finished(waiting.response_id)
    item = {"type": "function_call_output", "call_id": call_id, "output": "sunny"}
    core.receive({"type": "conversation.item.create", "item": item})
    late = start(core)
    assert {"role": "tool", "tool_call_id": call_id, "content": "sunny"} in late.messages
    assert (
        late.messages.index({"role": "tool", "tool_call_id": call_id, "content": "sunny"}) == 3
    )  # right after its call


def test_barge_in_while_a_call_streams_leaves_it_incomplete_and_out_of_the_llms_view(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER, modality="audio")
    ask(core, "Weather in Paris?")
    begun = start(core)
    core.response_audio(begun.response_id, np.full(4800, 0.1, dtype=np.float32), "Let me check.")
    spoken = core.pop_audio(begun.response_id)
    assert types(spoken)[:2] == ["response.output_item.added", "conversation.item.added"]  # the message, at index 0
    streamed = call_pieces(core, begun.response_id, 0, "get_weather", '{"ci')
    assert sent(streamed)[0]["output_index"] == 1
    cancelled = core.receive({"type": "response.cancel"})
    assert any(isinstance(a, CancelResponse) for a in cancelled)
    events = sent(cancelled)
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args_done["arguments"] == '{"ci'
    response = events[-1]["response"]
    assert response["status"] == "cancelled"
    assert [(o["type"], o["status"]) for o in response["output"]] == [
        ("message", "incomplete"),
        ("function_call", "incomplete"),
    ]
    ask(core, "Never mind.")
    after = start(core)
    assert all("tool_calls" not in m and m["role"] != "tool" for m in after.messages)
    call_id = response["output"][1]["call_id"]
    late = core.receive(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": "x"},
        }
    )
    assert types(late)[0] == "conversation.item.added"  # accepted, but the LLM never sees a cut-off call


@pytest.mark.parametrize(
    ("item", "param", "code"),
    [
        ({"type": "function_call_output", "call_id": "call_nope", "output": "x"}, "item.call_id", "item_not_found"),
        ({"type": "function_call_output", "output": "x"}, "item.call_id", "invalid_value"),
        (
            {"type": "function_call_output", "call_id": "call_1", "output": {"sky": "sunny"}},
            "item.output",
            "invalid_value",
        ),
        (
            {"type": "function_call", "name": "get_weather", "arguments": "{city: Paris"},
            "item.arguments",
            "invalid_value",
        ),
        ({"type": "function_call", "name": "get weather", "arguments": "{}"}, "item.name", "invalid_value"),
    ],
)
def test_bad_call_items_are_refused_precisely(vad: SileroVAD, item: dict[str, Any], param: str, code: str) -> None:
    core = with_tools(vad, WEATHER)
    error = error_of(core.receive({"type": "conversation.item.create", "item": item}))
    assert (error["param"], error["code"]) == (param, code)
    assert len(core.conversation) == 0


def test_a_second_output_for_one_call_is_refused(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER)
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert types(core.receive({"type": "conversation.item.create", "item": call}))[0] == "conversation.item.added"
    output = {"type": "function_call_output", "call_id": "call_1", "output": "snow"}
    assert types(core.receive({"type": "conversation.item.create", "item": output}))[0] == "conversation.item.added"
    error = error_of(core.receive({"type": "conversation.item.create", "item": output}))
    assert (error["param"], error["code"]) == ("item.call_id", "invalid_value")
    assert "already has its output" in error["message"]


def test_a_reply_without_calls_still_speaks_as_before(vad: SileroVAD) -> None:
    core = with_tools(vad, WEATHER)
    ask(core, "Hi!")
    begun = start(core)
    text = types(core.response_text(begun.response_id, "Hello"))
    assert text == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    done = sent(core.response_tool_call(begun.response_id, None) + core.response_finished(begun.response_id))
    assert [o["type"] for o in done[-1]["response"]["output"]] == ["message"]


def names(pieces: list[Any]) -> list[tuple[str | None, Any]]:
    return [(p.name, json.loads(p.arguments)) if isinstance(p, ToolCallDelta) else (None, p) for p in pieces]


def test_calls_written_as_text_are_recovered_and_other_text_streams_through() -> None:
    parser = TextToolCalls(["get_weather"])
    held = [parser.push(p) for p in (' {"name": "get_weather", ', '"arguments": {"city": "Paris"}}', ". It is sunny.")]
    assert held == [[], [], []]
    assert names(parser.flush()) == [("get_weather", {"city": "Paris"})]  # the invented result is dropped

    tagged = TextToolCalls(["get_weather", "get_time"])
    assert tagged.push("<tool_") == []
    rome = '{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}'
    tagged.push('call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n<tool_call>' + rome + "</tool_call>")
    assert names(tagged.flush(first_index=1)) == [("get_time", {}), ("get_weather", {"city": "Rome"})]

    fenced = TextToolCalls(["get_weather"])
    assert (
        fenced.push("``") == []
        and fenced.push('`json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```') == []
    )
    assert names(fenced.flush()) == [("get_weather", {"city": "Oslo"})]
    code = TextToolCalls(["get_weather"])
    code.push("```python\nprint(1)\n```")
    assert code.flush() == ["```python\nprint(1)\n```"]

    plain = TextToolCalls(["get_weather"])
    assert plain.push("Sure") == ["Sure"] and plain.push(", here.") == [", here."] and plain.flush() == []
    unknown = TextToolCalls(["get_weather"])
    assert unknown.push('{"name": "launch", "arguments": {}}') == []
    assert unknown.flush() == ['{"name": "launch", "arguments": {}}']  # not a call of ours: the text it was


def test_a_required_call_written_as_text_is_taken_as_soon_as_its_json_closes() -> None:
    parser = TextToolCalls(["get_weather"])
    assert parser.push('{"name": "get_weather", "arguments": {"city": "Par') == [] and parser.first_call() is None
    parser.push('is"}}.json\n{"name": "get_weather", "arguments": {"city": "London"}}')  # the model runs on
    call = parser.first_call(first_index=2)
    assert call is not None and (call.index, names([call])) == (2, [("get_weather", {"city": "Paris"})])
    assert parser.flush() == []  # the text after it, held with it, is never released
    for text in ("```json\n", "No, you should not", '{"name": "launch", "arguments": {}}'):
        other = TextToolCalls(["get_weather"])
        other.push(text)
        assert other.first_call() is None, text  # not (yet) a call of ours


def test_a_required_call_has_a_schema_of_one_call_to_an_offered_tool() -> None:
    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": weather}},
        {"type": "function", "function": {"name": "get_time"}},
    ]
    call = {"type": "object", "required": ["name", "arguments"]}
    assert one_call_schema(tools) == {
        "anyOf": [
            {**call, "properties": {"name": {"const": "get_weather"}, "arguments": weather}},
            {**call, "properties": {"name": {"const": "get_time"}, "arguments": {"type": "object"}}},
        ]
    }


def _arguments_schema(parameters: dict[str, Any]) -> dict[str, Any] | None:
    schema = one_call_schema([{"type": "function", "function": {"name": "f", "parameters": parameters}}])
    return None if schema is None else schema["anyOf"][0]["properties"]["arguments"]


def test_references_in_a_tools_parameters_are_written_out_in_the_schema_of_a_call() -> None:
    place = {"type": "object", "properties": {"country": {"$ref": "#/$defs/Country"}}, "required": ["country"]}
    country = {"type": "string", "enum": ["IE", "FR"]}
    parameters = {
        "type": "object",
        "properties": {
            "where": {"$ref": "#/$defs/Place", "description": "The place"},  # a keyword beside it is kept
            "unit": {"$ref": "#/definitions/Unit"},
            "again": {"$ref": "#/properties/unit"},
            "definitions": {"type": "string"},  # a parameter of that name is not a definitions block
        },
        "$defs": {"Place": place, "Country": country},
        "definitions": {"Unit": {"enum": ["c", "f"]}},
    }
    assert _arguments_schema(parameters) == {
        "type": "object",
        "properties": {
            "where": {
                "type": "object",
                "properties": {"country": country},
                "required": ["country"],
                "description": "The place",
            },
            "unit": {"enum": ["c", "f"]},
            "again": {"enum": ["c", "f"]},
            "definitions": {"type": "string"},
        },
    }


def test_a_reference_that_cannot_be_written_out_leaves_the_call_without_a_schema() -> None:
    node = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}
    recursive = {"type": "object", "properties": {"root": {"$ref": "#/$defs/Node"}}, "$defs": {"Node": node}}
    assert _arguments_schema(recursive) is None
    assert _arguments_schema({"properties": {"a": {"$ref": "#"}}}) is None  # the whole, inside itself
    assert _arguments_schema({"properties": {"a": {"$ref": "other.json#/x"}}}) is None
    assert _arguments_schema({"properties": {"a": {"$ref": "#/$defs/missing"}}}) is None
    # Each level names the next twice: 2**12 copies written out; past a bound, no schema.
    refs = [{"$ref": f"#/$defs/D{i + 1}"} for i in range(12)]
    doubling = {f"D{i}": {"properties": {"a": ref, "b": ref}} for i, ref in enumerate(refs)}
    assert _arguments_schema({"$ref": "#/$defs/D0", "$defs": {**doubling, "D12": {"type": "string"}}}) is None
    unused = {"type": "object", "properties": {"a": {"type": "string"}}, "$defs": {"Node": node}}
    assert _arguments_schema(unused) == {"type": "object", "properties": {"a": {"type": "string"}}}
