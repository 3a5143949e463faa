"""Validation of client events: the JSON itself, appended audio, and the bodies of
conversation.item.create and response.create."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from cosyagent.agent.conversation import Conversation, ConversationItem, Role
from cosyagent.agent.events import ProtocolError, new_id
from cosyagent.agent.session_config import UNSUPPORTED_PROMPT, SessionConfig
from cosyagent.agent.session_fields import (
    VoiceNote,
    no_note,
    parse_format,
    parse_max_tokens,
    parse_modalities,
    parse_object,
    parse_voice,
    refuse_unknown,
)
from cosyagent.agent.tools import check_call_item, parse_call_item, tool_settings

# openai-python's RealtimeResponseCreateParams.
RESPONSE_KEYS = frozenset(
    {"audio", "conversation", "input", "instructions", "max_output_tokens", "metadata", "output_modalities",
     "parallel_tool_calls", "prompt", "reasoning", "tool_choice", "tools"}
)  # fmt: skip
# openai-python's conversation item params, by type (object and status: an item sent back as received).
_ITEM_COMMON = {"type", "id", "object", "status"}
ITEM_KEYS = {
    "message": frozenset({*_ITEM_COMMON, "role", "content"}),
    "function_call": frozenset({*_ITEM_COMMON, "call_id", "name", "arguments"}),
    "function_call_output": frozenset({*_ITEM_COMMON, "call_id", "output"}),
}
_TEXT_PARTS = {"input_text", "output_text", "text"}
_ROLE_PART: dict[str, Literal["input_text", "output_text"]] = {
    "user": "input_text",
    "system": "input_text",
    "assistant": "output_text",
}


def parse_user_item(raw: Any, conversation: Conversation) -> ConversationItem:
    """A text message item from a client (user, system or assistant role), or a
    ``function_call`` / ``function_call_output`` item that fits ``conversation``."""
    if not isinstance(raw, Mapping):
        raise ProtocolError("'item' must be an object", code="invalid_value", param="item")
    if raw.get("type") in ("function_call", "function_call_output"):
        item = parse_call_item(raw)
        check_call_item(conversation, item)
        return item
    if raw.get("type", "message") != "message":
        raise ProtocolError(
            f"item type {raw.get('type')!r} is not supported; only 'message', 'function_call' and"
            " 'function_call_output' items are",
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
                f"content part {index} must be a text part (input_text with 'text') or input_audio; got {kind!r}",
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


def parse_response_params(
    raw: Any, voice_exists: Callable[[str], bool], session: SessionConfig, voice_note: VoiceNote = no_note
) -> dict[str, Any]:
    """response.create's ``response`` object -> SessionConfig overrides for that response
    (its tools combine with the ``session``'s tool_choice, and its tool_choice with their tools).
    Its ``conversation``, ``input`` and ``metadata``: :mod:`cosyagent.agent.out_of_band`."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ProtocolError("'response' must be an object", code="invalid_value", param="response")
    refuse_unknown(raw, RESPONSE_KEYS, "response")  # e.g. the beta's `modalities`: not silently ignored
    if raw.get("prompt"):
        raise ProtocolError(UNSUPPORTED_PROMPT, code="unsupported_parameter", param="response.prompt")
    params: dict[str, Any] = tool_settings(raw, session.tools, session.tool_choice, "response")
    if "instructions" in raw:
        if not isinstance(raw["instructions"], str):
            raise ProtocolError("instructions must be a string", code="invalid_value", param="response.instructions")
        params["instructions"] = raw["instructions"]
    if "output_modalities" in raw:
        params["output_modalities"] = parse_modalities(raw["output_modalities"], "response.output_modalities")
    if "max_output_tokens" in raw:
        params["max_output_tokens"] = parse_max_tokens(raw["max_output_tokens"], "response.max_output_tokens")
    audio = _object(raw.get("audio"), "response.audio")
    refuse_unknown(audio, frozenset({"output"}), "response.audio")
    output = _object(audio.get("output"), "response.audio.output")
    refuse_unknown(output, frozenset({"format", "voice"}), "response.audio.output")
    if "voice" in output:
        params["voice"] = parse_voice(output["voice"], voice_exists, "response.audio.output.voice", voice_note)
    if "format" in output:
        params["output_format"] = parse_format(output["format"], "response.audio.output.format")
    return params


def _object(value: Any, param: str) -> Mapping[str, Any]:
    """An optional object field: absent or null is empty."""
    return {} if value is None else parse_object(value, param)


def check_new_item(raw: Any, conversation: Conversation) -> None:
    """A new item names no field its type does not have (``unknown_parameter``, as a session's
    do), and may not take the id of one in the conversation: two items of one id could not be
    told apart by item_reference, retrieve, truncate or delete."""
    if not isinstance(raw, Mapping):
        return  # the item's parser says what is wrong
    if (known := ITEM_KEYS.get(raw.get("type", "message"))) is not None:
        refuse_unknown(raw, known, "item")
    item_id = raw.get("id")
    if isinstance(item_id, str) and conversation.get(item_id) is not None:
        raise ProtocolError(
            f"an item with id {item_id!r} is already in the conversation", code="invalid_value", param="item.id"
        )


def existing_item(event: Mapping[str, Any], conversation: Conversation) -> ConversationItem:
    """The conversation item an event's ``item_id`` names (item_not_found otherwise)."""
    item_id = event.get("item_id")
    item = conversation.get(item_id) if isinstance(item_id, str) else None
    if item is None:
        raise ProtocolError(f"item {item_id!r} does not exist", code="item_not_found", param="item_id")
    return item


def add_created_item(event: Mapping[str, Any], item: ConversationItem, conversation: Conversation) -> str | None:
    """Add conversation.item.create's item after its ``previous_item_id`` (item_not_found when
    that item is not there); returns the id of the item it follows."""
    previous_item_id = event.get("previous_item_id")
    try:
        return conversation.add(item, previous_item_id)
    except KeyError as exc:
        raise ProtocolError(
            f"previous_item_id {previous_item_id!r} is not in the conversation",
            code="item_not_found",
            param="previous_item_id",
        ) from exc


def parse_truncate(event: Mapping[str, Any], conversation: Conversation) -> tuple[ConversationItem, int]:
    """conversation.item.truncate's assistant audio item and ``audio_end_ms`` (not yet checked against its audio)."""
    item_id, audio_end_ms = event.get("item_id"), event.get("audio_end_ms")
    item = conversation.get(item_id) if isinstance(item_id, str) else None
    if item is None or item.spoken is None:
        raise ProtocolError(
            f"item {item_id!r} is not an assistant audio message", code="item_not_found", param="item_id"
        )
    if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
        raise ProtocolError("audio_end_ms must be a non-negative integer", code="invalid_value", param="audio_end_ms")
    return item, audio_end_ms


# Each client event's own fields, besides ``type`` and ``event_id`` (the SDK's *_event_param.py).
EVENT_FIELDS: dict[str, frozenset[str]] = {
    "session.update": frozenset({"session"}),
    "input_audio_buffer.append": frozenset({"audio"}),
    "input_audio_buffer.commit": frozenset(),
    "input_audio_buffer.clear": frozenset(),
    "conversation.item.create": frozenset({"item", "previous_item_id"}),
    "conversation.item.delete": frozenset({"item_id"}),
    "conversation.item.retrieve": frozenset({"item_id"}),
    "conversation.item.truncate": frozenset({"item_id", "content_index", "audio_end_ms"}),
    "response.create": frozenset({"response"}),
    "response.cancel": frozenset({"response_id"}),
}


def refuse_unknown_fields(event_type: str, event: dict[str, Any]) -> None:
    """``unknown_parameter`` for a field the event does not have (a misspelt ``previous_item_id``
    would otherwise be ignored, and the item added at the end)."""
    refuse_unknown(event, EVENT_FIELDS.get(event_type, frozenset()) | {"type", "event_id"}, "")


def check_served(event_type: str, config: SessionConfig) -> None:
    """A transcription session transcribes and makes no responses: their events are refused."""
    if config.session_type == "transcription" and event_type.startswith("response."):
        raise ProtocolError(
            f"{event_type} is not served in a transcription session: it makes no responses"
            " (a realtime session does: connect without ?intent=transcription)",
            code="invalid_event",
            param="type",
        )


def parse_event(raw: str | bytes | dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """One client event as a dict; refuses oversized, malformed and non-object events."""
    if isinstance(raw, dict):
        return raw
    if len(raw) > max_bytes:
        raise ProtocolError(f"event is over the {max_bytes} byte limit", code="event_too_large")
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"event is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise ProtocolError("event is nested too deeply to parse", code="invalid_json") from exc
    if not isinstance(event, dict):
        raise ProtocolError("event must be a JSON object", code="invalid_event")
    return event


def decode_appended_audio(audio_b64: Any, max_bytes: int) -> bytes:
    """input_audio_buffer.append's ``audio``: base64, at most ``max_bytes`` once decoded."""
    if not isinstance(audio_b64, str):
        raise ProtocolError("'audio' must be a base64 string", code="invalid_value", param="audio")
    if len(audio_b64) * 3 // 4 > max_bytes:
        raise ProtocolError(
            f"audio chunk is over the {max_bytes} byte limit; send smaller appends",
            code="audio_chunk_too_large",
            param="audio",
        )
    try:
        return base64.b64decode(audio_b64, validate=True)
    except binascii.Error as exc:
        raise ProtocolError("'audio' is not valid base64", code="invalid_base64", param="audio") from exc


def without_audio_formats(body: Any) -> Any:
    """A copy of a session or response body without its ``audio.input/output.format``: for a
    session whose audio travels on media tracks, where the wire formats do not apply."""
    audio = body.get("audio") if isinstance(body, Mapping) else None
    if not isinstance(audio, Mapping):
        return body
    sections = {
        direction: {k: v for k, v in section.items() if k != "format"}
        if direction in ("input", "output") and isinstance(section, Mapping)
        else section
        for direction, section in audio.items()
    }
    return {**body, "audio": sections}
