"""Validation of the bodies of conversation.item.create and response.create."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from cosyagent.agent.conversation import ConversationItem, Role
from cosyagent.agent.events import ProtocolError, new_id
from cosyagent.agent.session_config import parse_format, parse_max_tokens, parse_modalities, parse_voice

_TEXT_PARTS = {"input_text", "output_text", "text"}
_ROLE_PART: dict[str, Literal["input_text", "output_text"]] = {
    "user": "input_text",
    "system": "input_text",
    "assistant": "output_text",
}


def parse_user_item(raw: Any) -> ConversationItem:
    """A text message item from a client (user, system or assistant role)."""
    if not isinstance(raw, Mapping):
        raise ProtocolError("'item' must be an object", code="invalid_value", param="item")
    if raw.get("type", "message") != "message":
        raise ProtocolError(
            f"item type {raw.get('type')!r} is not supported; only 'message' items are",
            code="unsupported_item",
            param="item.type",
        )
    role = raw.get("role")
    if role not in _ROLE_PART:
        raise ProtocolError(
            "item.role must be 'user', 'assistant' or 'system'", code="invalid_value", param="item.role"
        )
    content = raw.get("content")
    if not isinstance(content, list) or not content:
        raise ProtocolError("item.content must be a non-empty list", code="invalid_value", param="item.content")
    texts: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise ProtocolError(
                f"content part {index} must be a text part (input_text with 'text'); got {kind!r}",
                code="unsupported_content",
                param=f"item.content[{index}]",
            )
        texts.append(part["text"])
    item_id = raw.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id or len(item_id) > 64):
        raise ProtocolError("item.id must be a string of 1-64 characters", code="invalid_value", param="item.id")
    typed_role: Role = role
    return ConversationItem(
        id=item_id or new_id("item"),
        role=typed_role,
        content_type=_ROLE_PART[role],
        text="".join(texts),
    )


def parse_response_params(raw: Any, voice_exists: Callable[[str], bool]) -> dict[str, Any]:
    """response.create's ``response`` object -> SessionConfig overrides for that response."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ProtocolError("'response' must be an object", code="invalid_value", param="response")
    for unsupported in ("input", "tools", "prompt"):
        if raw.get(unsupported):
            raise ProtocolError(
                f"response.{unsupported} is not supported by this server",
                code="unsupported_parameter",
                param=f"response.{unsupported}",
            )
    if raw.get("conversation", "auto") not in ("auto", None):
        raise ProtocolError(
            "only the default conversation is supported (conversation='auto')",
            code="unsupported_parameter",
            param="response.conversation",
        )
    params: dict[str, Any] = {}
    if "instructions" in raw:
        if not isinstance(raw["instructions"], str):
            raise ProtocolError("instructions must be a string", code="invalid_value", param="response.instructions")
        params["instructions"] = raw["instructions"]
    if "output_modalities" in raw:
        params["output_modalities"] = parse_modalities(raw["output_modalities"], "response.output_modalities")
    if "max_output_tokens" in raw:
        params["max_output_tokens"] = parse_max_tokens(raw["max_output_tokens"], "response.max_output_tokens")
    output = raw.get("audio", {}).get("output", {}) if isinstance(raw.get("audio"), Mapping) else {}
    if isinstance(output, Mapping):
        if "voice" in output:
            params["voice"] = parse_voice(output["voice"], voice_exists, "response.audio.output.voice")
        if "format" in output:
            params["output_format"] = parse_format(output["format"], "response.audio.output.format")
    return params
