"""The core's handlers of conversation.item.delete / retrieve / truncate, and the user turn an
idle timeout commits (:mod:`cosyagent.agent.idle_timeout`). Sans-I/O, like the core they serve:
:class:`~cosyagent.agent.realtime_core.RealtimeCore` extends :class:`ItemEvents`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from cosyagent.agent.audio_items import retrieved_item
from cosyagent.agent.captions import Captions
from cosyagent.agent.conversation import Conversation, ConversationItem
from cosyagent.agent.events import Action, Event, ProtocolError, Send, new_id
from cosyagent.agent.idle_timeout import IdleSpan
from cosyagent.agent.requests import existing_item, parse_truncate
from cosyagent.agent.response_state import CancelReason
from cosyagent.agent.responses import ResponseOutput


class ItemEvents(ResponseOutput):
    _captions: Captions  # the core's

    def heard_so_far(self, item_id: str, take: str) -> list[Action]:
        """A take of the turn ``item_id`` while its speaker talks (a draft, or a pause's
        transcript), in the language its transcript will be reported in: the words it adds to
        what the client was told, as a transcription delta."""
        if not self.config.transcription_reported:
            return []
        delta = self._captions.heard_so_far(item_id, take)
        return [transcript_delta(item_id, delta)] if delta else []

    def _transcript_told(self, item_id: str, transcript: str, duration_s: float) -> list[Action]:
        """The ended turn's transcript events (none while transcription is off)."""
        rest = self._captions.finished(item_id, transcript)
        reported = self.config.transcription_reported
        return transcript_events(item_id, transcript, duration_s, rest) if reported else []

    def _cancel_response(self, reason: CancelReason) -> list[Action]:
        raise NotImplementedError  # the core's: it also releases held audio

    def _on_item_delete(self, event: dict[str, Any]) -> list[Action]:
        item = existing_item(event, self.conversation)
        self.conversation.delete(item.id)
        return [self._send("conversation.item.deleted", item_id=item.id)]

    def _on_item_retrieve(self, event: dict[str, Any]) -> list[Action]:
        item = existing_item(event, self.conversation)
        return [self._send("conversation.item.retrieved", item=retrieved_item(item, self.config.input_format))]

    def _on_item_truncate(self, event: dict[str, Any]) -> list[Action]:
        item, audio_end_ms = parse_truncate(event, self.conversation)
        assert item.spoken is not None
        # Checked before the reply is cancelled: the cancel keeps whole words only, so a clause
        # begun but not yet heard as a word drops out, and the item's audio could look shorter
        # than what the client was sent (a phone bridge truncating at the audio that left).
        if audio_end_ms > item.spoken.audio_ms + 1:
            raise ProtocolError(
                f"audio_end_ms {audio_end_ms} is beyond the {int(item.spoken.audio_ms)} ms of audio sent",
                code="invalid_value",
                param="audio_end_ms",
            )
        actions: list[Action] = []
        if self._response is not None and self._response.item is item:
            actions += self._cancel_response("client_cancelled")
        item.truncate_spoken(audio_end_ms)
        return actions + [
            self._send("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=audio_end_ms)
        ]

    @staticmethod
    def _send(event_type: str, **fields: Any) -> Send:
        event: Event = {"type": event_type, "event_id": new_id("event"), **fields}
        return Send(event)


def timeout_turn(span: IdleSpan, item_id: str, conversation: Conversation) -> list[Action]:
    """The user stayed silent past idle_timeout_ms: the silence becomes a user item (not
    transcribed: it holds no words), as OpenAI commits it; the caller then starts a response,
    so the agent can prompt the user to go on."""
    item = ConversationItem(id=item_id, role="user", content_type="input_audio", transcript="")
    previous = conversation.add(item)
    return [
        ItemEvents._send("input_audio_buffer.timeout_triggered", item_id=item_id, **asdict(span)),
        ItemEvents._send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
        ItemEvents._send("conversation.item.added", previous_item_id=previous, item=item.to_event_dict()),
        ItemEvents._send("conversation.item.done", previous_item_id=previous, item=item.to_event_dict()),
    ]


def transcript_events(item_id: str, transcript: str, duration_s: float, rest: str | None) -> list[Action]:
    """A turn's transcript as the client is told it once the turn has ended: ``rest``, the words
    not yet told while its speaker talked (:mod:`cosyagent.agent.captions`), as a delta, then
    ``completed`` with the whole transcript."""
    usage = {"type": "duration", "seconds": round(duration_s, 3)}
    completed = ItemEvents._send(
        "conversation.item.input_audio_transcription.completed",
        item_id=item_id,
        content_index=0,
        transcript=transcript,
        usage=usage,
    )
    return [transcript_delta(item_id, rest), completed] if rest else [completed]


def transcription_failed_event(item_id: str, message: str, code: str | None) -> Send:
    """``code``: the client's audio could not be transcribed (an ``invalid_request_error``);
    None: the recognizer failed (a ``server_error``, ``transcription_failed``)."""
    kind = "invalid_request_error" if code else "server_error"
    error = {"type": kind, "code": code or "transcription_failed", "message": message}
    return ItemEvents._send(
        "conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0, error=error
    )


def transcript_delta(item_id: str, delta: str) -> Send:
    return ItemEvents._send(
        "conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=delta
    )
