"""User messages with ``input_audio`` content (conversation.item.create, response.create's input).

The audio is base64 in the session's input format, as in ``input_audio_buffer.append``. The LLM
reads text, so the item's transcript is what it sees: the client's own ``transcript`` when it
gives one, else the session's ASR transcribes the audio (the core asks for it like for a turn).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from cosyagent.agent.conversation import HEARD_RATE, ConversationItem
from cosyagent.agent.events import ProtocolError, new_id
from cosyagent.audio.pcm import pcm16_to_float
from cosyagent.audio.wire import AudioFormat, AudioFormatError, InputDecoder, OutputEncoder
from cosyagent.engines.base import AudioF32

MIN_AUDIO_MS = 100  # as for a commit: shorter audio holds no words


def has_audio_content(raw: Any) -> bool:
    """Whether ``raw`` is a message with an ``input_audio`` content part."""
    content = raw.get("content") if isinstance(raw, Mapping) and raw.get("type", "message") == "message" else None
    return isinstance(content, list) and any(
        isinstance(part, Mapping) and part.get("type") == "input_audio" for part in content
    )


def parse_audio_message(
    raw: Mapping[str, Any], fmt: AudioFormat, rate: int, where: str
) -> tuple[ConversationItem, AudioF32]:
    """A user message whose one content part is ``input_audio``: the item (its transcript the
    client's, or None: to transcribe) and the audio decoded to ``rate``. ``where``: the item's
    param path (``item``, or ``response.input[2]``)."""
    if raw.get("role") != "user":
        raise ProtocolError(
            "input_audio content belongs in a user message (role 'user')", code="invalid_value", param=f"{where}.role"
        )
    content = raw["content"]
    if len(content) != 1:
        raise ProtocolError(
            "a message with input_audio must have it as its only content part; send text in another item",
            code="unsupported_content",
            param=f"{where}.content",
        )
    part, param = content[0], f"{where}.content[0]"
    transcript = part.get("transcript")
    if transcript is not None and not isinstance(transcript, str):
        raise ProtocolError("transcript must be a string", code="invalid_value", param=f"{param}.transcript")
    samples = _decode(part.get("audio"), fmt, rate, f"{param}.audio")
    item_id = raw.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id or len(item_id) > 64):
        raise ProtocolError("item id must be a string of 1-64 characters", code="invalid_value", param=f"{where}.id")
    item = ConversationItem(
        id=item_id or new_id("item"), role="user", content_type="input_audio", transcript=transcript
    )
    return item, samples


def retrieved_item(item: ConversationItem, fmt: AudioFormat) -> dict[str, Any]:
    """The item as ``conversation.item.retrieved`` shows it: a user audio item whose audio is
    still kept carries it, base64 in the session's input format ``fmt`` (as OpenAI's does)."""
    body: dict[str, Any] = item.to_event_dict()
    if item.heard is not None:
        audio = OutputEncoder(fmt, HEARD_RATE).encode(pcm16_to_float(item.heard), last=True)
        body["content"] = [{**body["content"][0], "audio": base64.b64encode(audio).decode("ascii")}]
    return body


def _decode(audio_b64: Any, fmt: AudioFormat, rate: int, param: str) -> AudioF32:
    if not isinstance(audio_b64, str) or not audio_b64:
        raise ProtocolError(
            f"input_audio needs 'audio': base64 audio in the session's input format ({fmt})",
            code="invalid_value",
            param=param,
        )
    try:
        data = base64.b64decode(audio_b64, validate=True)
    except binascii.Error as exc:
        raise ProtocolError("'audio' is not valid base64", code="invalid_base64", param=param) from exc
    decoder = InputDecoder(fmt, rate)
    try:
        samples = np.concatenate([decoder.decode(data), decoder.flush()])
    except AudioFormatError as exc:
        raise ProtocolError(str(exc), code="invalid_audio", param=param) from exc
    if samples.size * 1000 < MIN_AUDIO_MS * rate:
        raise ProtocolError(
            f"input_audio is {1000 * samples.size / rate:.0f} ms long: at least {MIN_AUDIO_MS} ms is needed",
            code="invalid_audio",
            param=param,
        )
    return samples.astype(np.float32, copy=False)
