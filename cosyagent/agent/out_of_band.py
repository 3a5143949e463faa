"""Where a response reads from and writes to: response.create's ``conversation``, ``input`` and
``metadata`` (openai-python's ``RealtimeResponseCreateParams``).

``conversation: "none"`` makes an out-of-band response: its items are not added to the default
conversation (no ``conversation.item.*`` events for them; ``response.done`` carries its output,
and its ``conversation_id`` is null). ``input`` replaces the conversation as the LLM's context for
that one response: new items, and ``{"type": "item_reference", "id": ...}`` to items of the
session's conversation. ``metadata`` (at most 16 string pairs) comes back on the response object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cosyagent.agent.audio_items import has_audio_content, parse_audio_message
from cosyagent.agent.conversation import Conversation, ConversationItem
from cosyagent.agent.events import ProtocolError
from cosyagent.agent.requests import parse_user_item
from cosyagent.agent.tools import parse_call_item
from cosyagent.audio.wire import AudioFormat

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_INPUT_ITEMS = 200


@dataclass(frozen=True)
class ResponseContext:
    out_of_band: bool = False  # conversation "none"
    input: tuple[ConversationItem, ...] | None = None  # None: the default conversation is the context
    metadata: dict[str, str] | None = None


IN_CONVERSATION = ResponseContext()


def parse_response_context(raw: Any, conversation: Conversation, fmt: AudioFormat, rate: int) -> ResponseContext:
    """The ``conversation``, ``input`` and ``metadata`` of a response.create's ``response``."""
    if not isinstance(raw, Mapping):
        return IN_CONVERSATION
    target = raw.get("conversation")
    if target not in (None, "auto", "none"):
        raise ProtocolError(
            f"conversation must be 'auto' (the default conversation) or 'none' (out of band), not {target!r}",
            code="invalid_value",
            param="response.conversation",
        )
    items = None if raw.get("input") is None else parse_input(raw["input"], conversation, fmt, rate)
    return ResponseContext(target == "none", items, parse_metadata(raw.get("metadata"), "response.metadata"))


def parse_input(value: Any, conversation: Conversation, fmt: AudioFormat, rate: int) -> tuple[ConversationItem, ...]:
    if not isinstance(value, list):
        raise ProtocolError("response.input must be an array of items", code="invalid_value", param="response.input")
    if len(value) > MAX_INPUT_ITEMS:
        raise ProtocolError(
            f"response.input has {len(value)} items; at most {MAX_INPUT_ITEMS}",
            code="invalid_value",
            param="response.input",
        )
    return tuple(_input_item(raw, f"response.input[{i}]", conversation, fmt, rate) for i, raw in enumerate(value))


def _input_item(raw: Any, where: str, conversation: Conversation, fmt: AudioFormat, rate: int) -> ConversationItem:
    if not isinstance(raw, Mapping):
        raise ProtocolError("each input item must be an object", code="invalid_value", param=where)
    if raw.get("type") == "item_reference":
        item_id = raw.get("id")
        item = conversation.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise ProtocolError(
                f"item_reference {item_id!r} names no item of this session's conversation",
                code="item_not_found",
                param=f"{where}.id",
            )
        return item
    try:
        if raw.get("type") in ("function_call", "function_call_output"):
            return parse_call_item(raw)
        if has_audio_content(raw):
            item, _ = parse_audio_message(raw, fmt, rate, "item")
            if item.transcript is None:
                raise ProtocolError(
                    "input_audio in response.input needs its 'transcript': audio given here is not transcribed"
                    " (add it with conversation.item.create and reference it instead)",
                    code="unsupported_content",
                    param="item.content[0].transcript",
                )
            return item
        return parse_user_item(raw, conversation)
    except ProtocolError as exc:
        if exc.param is not None and (exc.param == "item" or exc.param.startswith("item.")):
            exc.param = where + exc.param.removeprefix("item")
        raise


def parse_metadata(value: Any, param: str) -> dict[str, str] | None:
    """At most 16 pairs; keys strings of 1-64 characters, values strings of at most 512."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ProtocolError("metadata must be an object of string keys and values", code="invalid_value", param=param)
    if len(value) > MAX_METADATA_PAIRS:
        raise ProtocolError(
            f"metadata has {len(value)} pairs; at most {MAX_METADATA_PAIRS}", code="invalid_value", param=param
        )
    for key, val in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY:
            raise ProtocolError(
                f"metadata keys must be strings of 1-{MAX_METADATA_KEY} characters; {str(key)[:80]!r} is not",
                code="invalid_value",
                param=param,
            )
        if not isinstance(val, str) or len(val) > MAX_METADATA_VALUE:
            raise ProtocolError(
                f"metadata values must be strings of at most {MAX_METADATA_VALUE} characters",
                code="invalid_value",
                param=f"{param}.{key}",
            )
    return dict(value)


def context_messages(items: tuple[ConversationItem, ...], instructions: str) -> list[dict[str, Any]]:
    """The LLM's view of a response's own ``input`` (instead of the conversation)."""
    context = Conversation(max_items=len(items) + 1)
    for item in items:
        context.add(item)
    return context.chat_messages(instructions, max_items=len(items) + 1)
