"""Tool calls a model wrote as text, recovered.

Small models offered tools often answer with the call's JSON as plain content,
``{"name": "get_weather", "arguments": {"city": "Paris"}}``, without the ``<tool_call>`` tags
their chat template asks for, so the server does not parse it as a call (Qwen2.5-Coder-0.5B
under llama.cpp does this, sometimes inside a markdown code fence). A reply whose text starts
with ``{``, ``<tool_call>`` or a code fence is held back until it ends; if it then starts with
such calls, each naming an offered tool, it becomes those calls, and any text after them is
dropped: a small model goes on to invent the call's result ("The weather in Paris is
sunny..."), which must not be spoken. Otherwise the held text is released unchanged. Any
other reply streams through untouched.

When a call is required, the first call can be taken as soon as its JSON closes
(:meth:`TextToolCalls.first_call`): asked with ``tool_choice: required``, Qwen2.5-Coder-0.5B
wrote on past its call to the token cap in 20 of 20 replies (repeats of the call, calls for
cities nobody asked about, invented results), where under ``auto`` it stopped after the call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from cosyagent.engines.base import ToolCallDelta


def one_call_schema(tools: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON Schema of one call written as text, ``{"name", "arguments"}``, to one of ``tools``
    (chat-completions tool objects): for an endpoint that can hold its output to a schema
    (llama-server's ``json_schema``), so a required call is made. Unconstrained, the embedded
    model answered "Should I take an umbrella in Berlin?" in words 4 times of 4 under a forced
    function; held to this schema it called in 20 of 20 forced replies and stopped after the call.

    References (``$ref``, as pydantic writes them for a nested model) are written out in place:
    inside the wrapper, pointers from the parameters' root would not resolve (llama-server
    refused such a schema with a 400). None when a reference cannot be written out (it is
    recursive, or points to another document): the call is then made without a schema."""
    calls = []
    for tool in tools:
        function = tool["function"]
        parameters = _without_references(function.get("parameters") or {"type": "object"})
        if parameters is None:
            return None
        name = {"const": function["name"]}
        calls.append(
            {"type": "object", "properties": {"name": name, "arguments": parameters}, "required": ["name", "arguments"]}
        )
    return {"anyOf": calls} if calls else None


_DEFINITION_KEYS = ("$defs", "definitions")
_MOST_REFERENCES = 256  # written out per tool: more is a schema too large to hold a reply to


class _Unresolvable(Exception):
    """A ``$ref`` that cannot be written out in place."""


def _without_references(parameters: dict[str, Any]) -> dict[str, Any] | None:
    """``parameters`` with each local ``$ref`` ("#/$defs/Location") replaced by what it points to
    (beside any keywords written next to it) and its definitions dropped; None if that cannot be."""
    written_out = 0

    def resolve(pointer: str) -> Any:
        if not pointer.startswith("#"):
            raise _Unresolvable(pointer)
        node: Any = parameters
        for part in filter(None, pointer[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise _Unresolvable(pointer)
        return node

    def write_out(node: Any, expanding: tuple[str, ...]) -> Any:
        nonlocal written_out
        if isinstance(node, list):
            return [write_out(item, expanding) for item in node]
        if not isinstance(node, dict):
            return node
        pointer = node.get("$ref")
        if isinstance(pointer, str):
            written_out += 1
            if pointer in expanding or written_out > _MOST_REFERENCES:
                raise _Unresolvable(pointer)
            beside = {key: value for key, value in node.items() if key != "$ref"}
            target = write_out(resolve(pointer), (*expanding, pointer))
            return {**target, **write_out(beside, expanding)} if isinstance(target, dict) else target
        return {key: write_out(value, expanding) for key, value in node.items()}

    try:
        written: dict[str, Any] = write_out(
            {key: value for key, value in parameters.items() if key not in _DEFINITION_KEYS}, ()
        )
        return written
    except _Unresolvable:
        return None


_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_FENCE = "```"


class TextToolCalls:
    def __init__(self, tool_names: Iterable[str]) -> None:
        self._names = set(tool_names)
        self._held: list[str] | None = []  # None: the reply is text, passed through

    def push(self, text: str) -> list[str | ToolCallDelta]:
        if self._held is None:
            return [text]
        self._held.append(text)
        start = "".join(self._held).lstrip()
        if not start or start.startswith(("{", _FENCE)) or _OPEN.startswith(start[: len(_OPEN)]):
            return []
        if _FENCE.startswith(start):
            return []
        return self._release()

    def flush(self, first_index: int = 0) -> list[str | ToolCallDelta]:
        """The reply ended: the held text as calls (numbered from ``first_index``), or as the
        text it was."""
        if not self._held:
            return []
        calls = self._calls("".join(self._held), first_index)
        if calls is None:
            return self._release()
        self._held = None
        return list(calls)

    def first_call(self, first_index: int = 0) -> ToolCallDelta | None:
        """The held text's first call, once its JSON is complete; the reply is then over (later
        text is never released). None while it is incomplete, or when the text is no call."""
        if not self._held:
            return None
        calls = self._calls("".join(self._held), first_index, limit=1)
        if calls is None:
            return None
        self._held = None
        return calls[0]

    def _release(self) -> list[str | ToolCallDelta]:
        held, self._held = "".join(self._held or ()), None
        return [held] if held else []

    def _calls(self, text: str, first_index: int, limit: int | None = None) -> list[ToolCallDelta] | None:
        body = text.replace(_OPEN, " ").replace(_CLOSE, " ").strip()
        if body.startswith(_FENCE):  # ```json ... ```
            body = body.split("\n", 1)[1] if "\n" in body else ""
            body = body.replace(_FENCE, " ").strip()
        decoder = json.JSONDecoder()
        calls: list[ToolCallDelta] = []
        position = 0
        while position < len(body) and body[position] == "{" and (limit is None or len(calls) < limit):
            try:
                value, end = decoder.raw_decode(body, position)
            except json.JSONDecodeError:
                break
            call = self._call(value, first_index + len(calls))
            if call is None:
                break
            calls.append(call)
            position = end
            while position < len(body) and body[position].isspace():
                position += 1
        return calls or None

    def _call(self, value: Any, index: int) -> ToolCallDelta | None:
        if not isinstance(value, dict) or value.get("name") not in self._names:
            return None
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):
            arguments_text = arguments
        elif isinstance(arguments, dict):
            arguments_text = json.dumps(arguments, ensure_ascii=False)
        else:
            return None
        return ToolCallDelta(index=index, arguments=arguments_text, name=str(value["name"]))
