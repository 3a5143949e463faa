"""Function tools of the Realtime API: the ``tools`` and ``tool_choice`` of a session or a
response, validated, and as an OpenAI-compatible chat endpoint takes them.

A tool is ``{"type": "function", "name", "description", "parameters"}`` (openai-python's
``RealtimeFunctionTool``); ``parameters`` must be a JSON Schema object. ``tool_choice`` is
``auto``, ``none``, ``required`` or ``{"type": "function", "name": ...}``. A forced function is
sent to the LLM as ``required`` with that one tool: llama.cpp's server takes no other form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cosyagent.agent.conversation import Conversation, ConversationItem
from cosyagent.agent.events import ProtocolError, new_id

MAX_TOOLS = 128
MAX_TOOL_JSON_CHARS = 64 * 1024  # one tool's schema and description, as JSON
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOOL_KEYS = frozenset({"type", "name", "description", "parameters"})
_JSON_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_MODES = ("auto", "none", "required")
ToolMode = Literal["auto", "none", "required"]


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """As the session object shows it."""
        return {"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters}

    def to_chat(self) -> dict[str, Any]:
        """As chat completions' ``tools`` take it."""
        function: dict[str, Any] = {"name": self.name, "description": self.description}
        function["parameters"] = (
            self.parameters if self.parameters is not None else {"type": "object", "properties": {}}
        )
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ForcedFunction:
    """``tool_choice`` naming one function: the model must call it."""

    name: str


ToolChoice = ToolMode | ForcedFunction


def choice_to_dict(choice: ToolChoice) -> str | dict[str, str]:
    return {"type": "function", "name": choice.name} if isinstance(choice, ForcedFunction) else choice


def chat_tools(tools: tuple[FunctionTool, ...], choice: ToolChoice) -> tuple[tuple[dict[str, Any], ...], str]:
    """(chat ``tools``, chat ``tool_choice``) for a response; no tools when there are none."""
    if isinstance(choice, ForcedFunction):
        return tuple(t.to_chat() for t in tools if t.name == choice.name), "required"
    return tuple(t.to_chat() for t in tools), choice


def parse_tools(value: Any, param: str) -> tuple[FunctionTool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid(param, "tools must be a list of function tools")
    if len(value) > MAX_TOOLS:
        raise _invalid(param, f"at most {MAX_TOOLS} tools are accepted, not {len(value)}")
    tools = tuple(_parse_tool(raw, f"{param}[{index}]") for index, raw in enumerate(value))
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if tool.name in seen:
            raise _invalid(f"{param}[{index}].name", f"tool name {tool.name!r} is used twice; names must be unique")
        seen.add(tool.name)
    return tools


def _parse_tool(raw: Any, param: str) -> FunctionTool:
    if not isinstance(raw, Mapping):
        raise _invalid(param, "a tool must be an object")
    kind = raw.get("type", "function")
    if kind != "function":
        raise ProtocolError(
            f"tool type {kind!r} is not supported; only 'function' tools are (no MCP servers)",
            code="unsupported_parameter",
            param=f"{param}.type",
        )
    unknown = sorted(str(key) for key in raw if key not in _TOOL_KEYS)
    if unknown:
        raise ProtocolError(
            f"Unknown parameter: '{param}.{unknown[0]}'.", code="unknown_parameter", param=f"{param}.{unknown[0]}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _invalid(f"{param}.name", "name must be 1-64 letters, digits, underscores or dashes")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise _invalid(f"{param}.description", "description must be a string")
    parameters = raw.get("parameters")
    if parameters is not None:
        check_schema(parameters, f"{param}.parameters", top=True)
    if len(json.dumps(raw, default=str)) > MAX_TOOL_JSON_CHARS:
        raise _invalid(param, f"a tool must be at most {MAX_TOOL_JSON_CHARS} characters as JSON")
    return FunctionTool(name, description, parameters)


def check_schema(schema: Any, param: str, *, top: bool = False) -> None:
    """The parts of JSON Schema an LLM's tool-call grammar is built from, checked for shape:
    a top-level ``object``; ``type``, ``properties``, ``required``, ``items`` and ``enum``
    well formed at every level. Other keywords pass unchecked."""
    if not isinstance(schema, Mapping):
        raise _invalid(param, "a JSON Schema must be an object")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for one in kinds:
        if one not in _JSON_TYPES:
            raise _invalid(f"{param}.type", f"{one!r} is not a JSON Schema type ({', '.join(sorted(_JSON_TYPES))})")
    if top and kind != "object":
        raise _invalid(f"{param}.type", "a function's parameters must be a schema of type 'object'")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise _invalid(f"{param}.properties", "properties must be an object of schemas")
    for name, sub in properties.items():
        check_schema(sub, f"{param}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _invalid(f"{param}.required", "required must be a list of property names")
    missing = [r for r in required if r not in properties]
    if missing:
        raise _invalid(f"{param}.required", f"required names {missing[0]!r}, which is not in properties")
    if "items" in schema:
        check_schema(schema["items"], f"{param}.items")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise _invalid(f"{param}.enum", "enum must be a non-empty list")


def parse_tool_choice(value: Any, param: str) -> ToolChoice:
    if value in _MODES:
        mode: ToolMode = value
        return mode
    if isinstance(value, Mapping) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{param}.name", "a forced function needs its name")
        return ForcedFunction(name)
    if isinstance(value, Mapping) and value.get("type") == "mcp":
        raise ProtocolError("MCP tools are not supported", code="unsupported_parameter", param=f"{param}.type")
    raise _invalid(param, "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}")


def check_choice(tools: tuple[FunctionTool, ...], choice: ToolChoice, param: str) -> None:
    """A forced function must be one of the tools; ``required`` needs at least one tool."""
    if isinstance(choice, ForcedFunction) and all(t.name != choice.name for t in tools):
        names = ", ".join(t.name for t in tools) or "none"
        raise _invalid(f"{param}.name", f"tool_choice names {choice.name!r}, which is not a tool (tools: {names})")
    if choice == "required" and not tools:
        raise _invalid(param, "tool_choice 'required' needs at least one tool")


def tool_settings(
    body: Mapping[str, Any], tools: tuple[FunctionTool, ...], choice: ToolChoice, where: str
) -> dict[str, Any]:
    """The ``tools`` / ``tool_choice`` a session.update or response.create body sets, checked
    together with the current ones they combine with: SessionConfig field overrides."""
    changes: dict[str, Any] = {}
    if "tools" in body:
        changes["tools"] = tools = parse_tools(body["tools"], f"{where}.tools")
    if "tool_choice" in body and body["tool_choice"] is not None:
        changes["tool_choice"] = choice = parse_tool_choice(body["tool_choice"], f"{where}.tool_choice")
    if changes:
        check_choice(tools, choice, f"{where}.tool_choice")
    return changes


def parse_call_item(raw: Mapping[str, Any]) -> ConversationItem:
    """A ``function_call_output`` (the client's answer to a call) or ``function_call`` item."""
    item_id = raw.get("id") or new_id("item")
    if not isinstance(item_id, str) or len(item_id) > 64:
        raise _invalid("item.id", "item.id must be a string of 1-64 characters")
    call_id = raw.get("call_id")
    if raw["type"] == "function_call_output":
        if not isinstance(call_id, str) or not call_id:
            raise _invalid("item.call_id", "a function_call_output needs the call_id of the call it answers")
        output = raw.get("output")
        if not isinstance(output, str):
            raise _invalid("item.output", "output must be a string (JSON text, or any text)")
        return ConversationItem.function_call_output(item_id, call_id, output)
    if call_id is not None and (not isinstance(call_id, str) or not call_id):
        raise _invalid("item.call_id", "call_id must be a non-empty string")
    name, arguments = raw.get("name"), raw.get("arguments", "{}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _invalid("item.name", "name must be 1-64 letters, digits, underscores or dashes")
    if not isinstance(arguments, str):
        raise _invalid("item.arguments", "arguments must be a string of JSON")
    try:
        json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise _invalid("item.arguments", f"arguments are not valid JSON: {exc}") from exc
    return ConversationItem.function_call(item_id, call_id or new_id("call"), name, arguments)


def check_call_item(conversation: Conversation, item: ConversationItem) -> None:
    """An output must answer a call in the conversation, once; a call's id must be new."""
    if item.type == "message":
        return
    calls = [it for it in conversation if it.type == "function_call" and it.call_id == item.call_id]
    if item.type == "function_call":
        if calls:
            raise _invalid("item.call_id", f"call_id {item.call_id!r} is already used by item {calls[0].id!r}")
        return
    if not calls:
        raise ProtocolError(
            f"call_id {item.call_id!r} matches no function_call item in the conversation",
            code="item_not_found",
            param="item.call_id",
        )
    answered = next(
        (it for it in conversation if it.type == "function_call_output" and it.call_id == item.call_id), None
    )
    if answered is not None:
        raise _invalid("item.call_id", f"call {item.call_id!r} already has its output (item {answered.id!r})")


def _invalid(param: str, message: str) -> ProtocolError:
    return ProtocolError(message, code="invalid_value", param=param)
