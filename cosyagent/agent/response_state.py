"""One assistant response on the wire: its item, its audio outbox and its lifecycle events.

Synthesized audio is *planned* into an outbox; the I/O layer pops it one delta at a
time at the pace it chooses. Only popped audio counts as sent, so a cancelled
response keeps exactly the words whose audio reached the client. Popped audio is a
``response.output_audio.delta`` event in the session's output format, or, when it
travels on a media track, a :class:`~cosyagent.agent.events.PlayAudio` of the
synthesizer's own samples (the track resamples it once).

A response offered tools may answer with function calls alone (:mod:`cosyagent.agent.response_calls`):
its message item is then announced only once it has content, so a response of calls
alone has the calls as its only output items, as OpenAI's does.

When the session asked for timestamps, each piece of audio takes the word and viseme
marks that start in it (:class:`~cosyagent.pipeline.timestamps.MarkQueue`): popped, they
leave as a ``response.output_audio_timestamps.delta`` event just before the audio (on
the data channel, for a media track), and a cancelled response drops them with it.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cosyagent.agent.conversation import AlignedTranscript, Conversation, ConversationItem
from cosyagent.agent.events import Action, Event, PlayAudio, Send, new_id
from cosyagent.agent.response_calls import ResponseCalls
from cosyagent.agent.session_fields import format_dict
from cosyagent.audio.wire import OutputEncoder
from cosyagent.engines.base import AudioF32, ToolCallDelta
from cosyagent.pipeline.reply import IncompleteReason
from cosyagent.pipeline.timestamps import Mark, MarkQueue, SpeechTimings, payload

DELTA_MS = 100  # audio per response.output_audio.delta
_EMPTY: AudioF32 = np.zeros(0, dtype=np.float32)

CancelReason = Literal["turn_detected", "client_cancelled"]
_ALL_SENT = ("completed", "incomplete")  # ended with everything it made sent (incomplete: the LLM stopped short)


@dataclass
class _PlannedDelta:
    audio: bytes | AudioF32  # bytes in the output format; floats at the TTS rate for a media track
    duration_ms: float
    clause: str | None  # set on the first delta of a clause: its transcript delta goes with it
    marks: list[Mark] = field(default_factory=list)  # the words and visemes that start in it


@dataclass
class ResponseState:
    id: str
    item: ConversationItem
    encoder: OutputEncoder | None  # None for a text-only response
    voice: str
    max_output_tokens: int | None
    media_rate: int | None = None  # set: the audio goes to a media track, as floats at this rate
    marks: MarkQueue | None = None  # set: timestamps were asked for
    outbox: deque[_PlannedDelta] = field(default_factory=deque)
    sent_ms: float = 0.0
    sent_text: str = ""
    planned_ms: float = 0.0
    timings: dict[str, Any] = field(default_factory=dict)
    # Set when tools are offered: the message item is placed here at once but announced only
    # once it has content, and function calls become items of their own.
    conversation: Conversation | None = None
    outputs: list[ConversationItem] = field(default_factory=list)  # announced output items, in order
    calls: ResponseCalls | None = None
    # Out of band (response.create with conversation "none"): its items stay out of the default
    # conversation, so no conversation.item.* events are sent for them.
    out_of_band: bool = False
    metadata: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.conversation is None:
            self.outputs.append(self.item)
        else:
            self.calls = ResponseCalls(self.id, self.conversation.add)

    @property
    def announced(self) -> bool:
        return self.item in self.outputs

    @property
    def audio(self) -> bool:
        return self.encoder is not None

    @property
    def spoken(self) -> AlignedTranscript:
        assert self.item.spoken is not None, "audio responses always have an aligned transcript"
        return self.item.spoken

    def _ids(self) -> dict[str, Any]:
        index = self.outputs.index(self.item) if self.announced else len(self.outputs)
        return {"response_id": self.id, "item_id": self.item.id, "output_index": index, "content_index": 0}

    def response_object(self, status: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "conversation_id": None if self.out_of_band else "conv_default",
            "output_modalities": ["audio"] if self.audio else ["text"],
            "max_output_tokens": self.max_output_tokens if self.max_output_tokens is not None else "inf",
            "output": [item.to_event_dict() for item in self.outputs] if status != "in_progress" else [],
            "usage": None,
            "metadata": self.metadata,
        }
        if self.encoder is not None:
            body["audio"] = {"output": {"format": format_dict(self.encoder.format), "voice": self.voice}}
        return body

    def start_events(self, previous_item_id: str | None) -> list[Event]:
        created: Event = {
            "type": "response.created",
            "event_id": new_id("event"),
            "response": self.response_object("in_progress"),
        }
        return (
            [created] if self.conversation is not None else [created, *self._shown(self._item_events(previous_item_id))]
        )

    def _announce(self) -> list[Event]:
        """The message item's opening events, the first time it has content to show."""
        if self.announced or self.conversation is None:
            return []
        events = self._item_events(self.conversation.previous_id(self.item.id))
        self.outputs.append(self.item)
        return self._shown(events)

    def _shown(self, events: list[Event]) -> list[Event]:
        """``events`` as the client sees them: an out-of-band response's items are not in the conversation."""
        if not self.out_of_band:
            return events
        return [event for event in events if not str(event["type"]).startswith("conversation.item.")]

    def _item_events(self, previous_item_id: str | None) -> list[Event]:
        part_type = "audio" if self.audio else "text"
        empty_part = {"type": part_type, "transcript": ""} if self.audio else {"type": part_type, "text": ""}
        item = self.item.to_event_dict()
        return [
            {
                "type": "response.output_item.added",
                "event_id": new_id("event"),
                "response_id": self.id,
                "output_index": self._ids()["output_index"],
                "item": item,
            },
            {
                "type": "conversation.item.added",
                "event_id": new_id("event"),
                "previous_item_id": previous_item_id,
                "item": item,
            },
            {"type": "response.content_part.added", "event_id": new_id("event"), **self._ids(), "part": empty_part},
        ]

    def text_delta(self, delta: str) -> list[Event]:
        announced = self._announce()
        self.item.text += delta
        return [
            *announced,
            {"type": "response.output_text.delta", "event_id": new_id("event"), **self._ids(), "delta": delta},
        ]

    def tool_call(self, piece: ToolCallDelta | None) -> list[Event]:
        """A piece of a function call, or None once the LLM has finished: its calls are done."""
        if self.calls is None:
            return []  # no tools were offered: a server's stray call is not ours to show
        if piece is None:
            return self._shown(self.calls.finish())
        events = self._announce() if self.outbox or self.sent_ms or self.item.text else []
        more, opened = self.calls.delta(piece, len(self.outputs))
        if opened is not None:
            self.outputs.append(opened)
        return events + self._shown(more)

    @property
    def pending_ms(self) -> float:
        return sum(planned.duration_ms for planned in self.outbox)

    def plan_audio(self, samples: AudioF32, clause: str | None, timings: SpeechTimings | None = None) -> None:
        if self.marks is not None:
            self.marks.add(samples.size, timings)
        if self.media_rate is not None:
            self._plan_samples(samples, self.media_rate, clause)
        else:
            assert self.encoder is not None
            self._plan_bytes(self.encoder.encode(samples), clause)

    def flush_audio(self) -> None:
        """Plan what the resampler still holds (call once the synthesizer is done)."""
        if self.encoder is not None and self.media_rate is None:
            self._plan_bytes(self.encoder.encode(samples=_EMPTY, last=True), None)
        if self.marks is not None and self.outbox:  # the marks at the very end go with the last piece
            self.outbox[-1].marks.extend(self.marks.rest())

    def _plan_bytes(self, data: bytes, clause: str | None) -> None:
        assert self.encoder is not None
        step = int(DELTA_MS * self.encoder.rate / 1000) * (2 if self.encoder.format == "audio/pcm" else 1)
        for offset in range(0, len(data), step):
            piece = data[offset : offset + step]
            self._plan_piece(piece, self.encoder.duration_ms(piece), clause if offset == 0 else None)
        if clause is not None or data:
            self.spoken.add_audio(clause, self.encoder.duration_ms(data))

    def _plan_samples(self, samples: AudioF32, rate: int, clause: str | None) -> None:
        step = DELTA_MS * rate // 1000
        for offset in range(0, samples.size, step):
            piece = samples[offset : offset + step]
            self._plan_piece(piece, 1000.0 * piece.size / rate, clause if offset == 0 else None)
        if clause is not None or samples.size:
            self.spoken.add_audio(clause, 1000.0 * samples.size / rate)

    def _plan_piece(self, audio: bytes | AudioF32, duration_ms: float, clause: str | None) -> None:
        self.planned_ms += duration_ms
        marks = self.marks.until(self.planned_ms) if self.marks is not None else []
        self.outbox.append(_PlannedDelta(audio, duration_ms, clause, marks))

    def pop_audio(self) -> list[Action]:
        """Send the next planned delta (with its clause's transcript delta, if it opens one)."""
        if not self.outbox:
            return []
        planned = self.outbox.popleft()
        actions: list[Action] = [Send(event) for event in self._announce()]
        if planned.clause is not None:
            delta = (" " if self.sent_text else "") + planned.clause
            self.sent_text += delta
            actions.append(Send(self._event("response.output_audio_transcript.delta", delta=delta)))
        if planned.marks:
            actions.append(Send(self._timestamps_event(planned.marks)))
        self.sent_ms += planned.duration_ms
        if isinstance(planned.audio, bytes):
            audio_b64 = base64.b64encode(planned.audio).decode("ascii")
            actions.append(Send(self._event("response.output_audio.delta", delta=audio_b64)))
        else:
            assert self.media_rate is not None
            actions.append(PlayAudio(self.id, planned.audio, self.media_rate))
        return actions

    def _event(self, event_type: str, **fields: Any) -> Event:
        return {"type": event_type, "event_id": new_id("event"), **self._ids(), **fields}

    def end_events(
        self, status: str, reason: CancelReason | IncompleteReason | None = None, error: str | None = None
    ) -> list[Event]:
        """Close the response: what was not sent is dropped and forgotten. ``incomplete``: the
        LLM stopped short (``reason``), but all that was made was sent, as when ``completed``."""
        self.outbox.clear()
        if self.audio and status not in _ALL_SENT:
            self.item.truncate_spoken(self.sent_ms)
        self.item.status = "completed" if status == "completed" else "incomplete"
        details: dict[str, Any] | None = None
        calls_done = self.calls.finish("completed" if status == "completed" else "incomplete") if self.calls else []
        if status in ("cancelled", "incomplete"):
            details = {"type": status, "reason": reason}
        elif status == "failed":
            details = {"type": "failed", "error": {"type": "server_error", "code": error}}
        done: Event = {
            "type": "response.done",
            "event_id": new_id("event"),
            "response": self.response_object(status, details),
        }
        if self.timings:
            done["x_cosyagent_timings_ms"] = self.timings
        if not self.announced:  # the message never had content: it was never shown
            assert self.conversation is not None
            self.conversation.delete(self.item.id)
            return [*self._shown(calls_done), done]
        return [*self._shown([*self._message_end_events(status), *calls_done]), done]

    def _timestamps_event(self, marks: list[Mark]) -> Event:
        # audio_start_ms: where the audio after this event starts, on the marks' clock. A client
        # whose audio stalled re-syncs its clock on it (the first mark may lie later in the piece).
        start_ms = round(self.sent_ms)
        return self._event("response.output_audio_timestamps.delta", audio_start_ms=start_ms, **payload(marks))

    def _message_end_events(self, status: str) -> list[Event]:
        item = self.item.to_event_dict()
        ids = self._ids()
        events: list[Event] = []
        if status in _ALL_SENT and self.marks is not None and (rest := self.marks.rest()):
            # All the audio has gone already: what is left marks its very end (the closing ``sil``).
            events.append(self._timestamps_event(rest))
        if self.audio:
            transcript = self.item.visible_text()
            events.append({"type": "response.output_audio.done", "event_id": new_id("event"), **ids})
            events.append(
                {
                    "type": "response.output_audio_transcript.done",
                    "event_id": new_id("event"),
                    **ids,
                    "transcript": transcript,
                }
            )
            part: dict[str, Any] = {"type": "audio", "transcript": transcript}
        else:
            events.append(
                {"type": "response.output_text.done", "event_id": new_id("event"), **ids, "text": self.item.text}
            )
            part = {"type": "text", "text": self.item.text}
        events.append({"type": "response.content_part.done", "event_id": new_id("event"), **ids, "part": part})
        events.append(
            {
                "type": "response.output_item.done",
                "event_id": new_id("event"),
                "response_id": self.id,
                "output_index": ids["output_index"],
                "item": item,
            }
        )
        events.append({"type": "conversation.item.done", "event_id": new_id("event"), "item": item})
        return events
