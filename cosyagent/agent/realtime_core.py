"""The OpenAI Realtime protocol as a sans-I/O state machine.

Feed it client events (JSON text or dicts) and engine results; it returns the
:class:`~cosyagent.agent.events.Action` list to carry out: events to send, ASR jobs
to run or drop, replies to start or stop. It never awaits, never touches a socket or
a model, and is driven by tests with plain dicts. Not thread-safe: one event loop
owns each core.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from cosyagent.agent.conversation import AlignedTranscript, Conversation, ConversationItem
from cosyagent.agent.events import (
    Action,
    CancelResponse,
    CancelTranscribe,
    Event,
    PredictTurnEnd,
    ProtocolError,
    Send,
    StartResponse,
    Transcribe,
    new_id,
    server_error_event,
)
from cosyagent.agent.input_buffer import InputBuffer
from cosyagent.agent.requests import parse_response_params, parse_user_item
from cosyagent.agent.response_state import CancelReason, ResponseState
from cosyagent.agent.session_config import InvalidSessionValue, SessionConfig
from cosyagent.audio.wire import AudioFormatError, InputDecoder, OutputEncoder
from cosyagent.engines.base import AudioF32, VADStream
from cosyagent.pipeline.turns import (
    SpeechConfirmed,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnEvent,
)

logger = logging.getLogger(__name__)

ASR_RATE = 16000


@dataclass(frozen=True)
class CoreLimits:
    max_event_bytes: int = 1 << 20  # one client event; larger ones are refused
    max_append_bytes: int = 512 * 1024  # decoded audio in one input_audio_buffer.append
    max_buffer_seconds: float = 120.0  # uncommitted input audio kept
    max_context_items: int = 20  # conversation items the LLM sees


@dataclass(frozen=True)
class _WaitingResponse:
    """A response to start once the pending user transcript is known."""

    params: dict[str, Any]
    automatic: bool  # from server VAD: skipped when every transcript is empty (a cough, a click)
    heard_words: bool = False  # some turn it waits for had words


@dataclass
class _TranscriptJob:
    item_id: str
    committed: bool = False
    result: str | None = None
    duration_s: float = 0.0


class RealtimeCore:
    def __init__(
        self,
        config: SessionConfig,
        *,
        vad: VADStream,
        tts_sample_rate: int,
        voice_exists: Callable[[str], bool],
        limits: CoreLimits = CoreLimits(),
    ) -> None:
        self.session_id = new_id("sess")
        self.config = config
        self.conversation = Conversation()
        self._voice_exists = voice_exists
        self._tts_rate = tts_sample_rate
        self._limits = limits
        self._decoder = InputDecoder(config.input_format, ASR_RATE)
        self._input = InputBuffer(vad, config.turn_detection, ASR_RATE, limits.max_buffer_seconds)
        self._speech_item_id: str | None = None  # the user item the current speech will become
        self._speculative_job: str | None = None
        self._jobs: dict[str, _TranscriptJob] = {}
        self._response: ResponseState | None = None
        self._response_waiting: _WaitingResponse | None = None
        # Speech heard while the agent talks, not yet long enough to interrupt: hold the
        # reply's audio until it is (cancel) or the sound turns out to be a cough (resume).
        self._audio_on_hold = False

    # --- inputs ----------------------------------------------------------------------

    def start(self) -> list[Action]:
        return [self._send("session.created", session=self.config.to_dict(self.session_id))]

    def receive(self, raw: str | bytes | dict[str, Any]) -> list[Action]:
        """Handle one client event. Bad input becomes an ``error`` event, never an exception."""
        event_id: str | None = None
        try:
            event = self._parse(raw)
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            handler = self._handlers.get(event.get("type"))  # type: ignore[arg-type]
            if handler is None:
                raise ProtocolError(
                    f"unknown or unsupported event type {event.get('type')!r}", code="invalid_event", param="type"
                )
            return handler(self, event)
        except ProtocolError as exc:
            exc.event_id = exc.event_id or event_id
            return [Send(exc.to_event())]
        except InvalidSessionValue as exc:
            return [Send(ProtocolError(str(exc), code="invalid_value", param=exc.param, event_id=event_id).to_event())]

    def transcription_done(self, job_id: str, text: str, duration_s: float) -> list[Action]:
        job = self._jobs.get(job_id)
        if job is None:
            return []
        job.result, job.duration_s = text.strip(), duration_s
        return self._finish_transcript(job_id) if job.committed else []

    def turn_end_predicted(self, job_id: str, probability: float) -> list[Action]:
        """The end-of-turn model's verdict on the pause that started ``job_id``: end the turn now
        if it is sure enough and the speaker is still quiet (otherwise the silence wait goes on)."""
        detection = self.config.turn_detection
        if detection is None or self._speculative_job != job_id or probability < detection.turn_end_probability:
            return []
        actions: list[Action] = []
        for turn in self._input.end_turn():
            actions += self._on_turn_event(turn)
        return actions

    def transcription_failed(self, job_id: str, message: str) -> list[Action]:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return []
        if self._speculative_job == job_id:
            self._speculative_job = None
        self._response_waiting = None
        return [
            self._send(
                "conversation.item.input_audio_transcription.failed",
                item_id=job.item_id,
                content_index=0,
                error={"type": "server_error", "code": "transcription_failed", "message": message},
            )
        ]

    def response_text(self, response_id: str, delta: str) -> list[Action]:
        response = self._current(response_id)
        return [Send(response.text_delta(delta))] if response and not response.audio else []

    def response_audio(self, response_id: str, samples: AudioF32, clause: str | None) -> None:
        """Plan synthesized audio for sending; :meth:`pop_audio` releases it."""
        response = self._current(response_id)
        if response is not None and response.audio:
            response.plan_audio(samples, clause)

    def pending_audio_ms(self, response_id: str) -> float:
        response = self._current(response_id)
        if response is None or response.encoder is None:
            return 0.0
        return sum(response.encoder.duration_ms(p.data) for p in response.outbox)

    def sent_audio_ms(self, response_id: str) -> float:
        response = self._current(response_id)
        return response.sent_ms if response else 0.0

    def flush_audio(self, response_id: str) -> None:
        """The synthesizer is done: plan the audio still held in the output resampler."""
        response = self._current(response_id)
        if response is not None:
            response.flush_audio()

    def audio_on_hold(self) -> bool:
        """True while unconfirmed user speech pauses reply audio; the I/O layer must not
        pop audio then, and should try again after the next client event."""
        return self._audio_on_hold

    def pop_audio(self, response_id: str) -> list[Action]:
        response = self._current(response_id)
        return _sends(response.pop_delta()) if response else []

    def response_finished(self, response_id: str, timings: dict[str, Any] | None = None) -> list[Action]:
        """The generator is done; everything planned must have been popped already."""
        response = self._current(response_id)
        if response is None:
            return []
        response.timings = timings or {}
        self._response = None
        return _sends(response.end_events("completed"))

    def response_failed(self, response_id: str, message: str, code: str) -> list[Action]:
        response = self._current(response_id)
        if response is None:
            return []
        self._response = None
        events: list[Action] = [Send(server_error_event(message, code))]
        return events + _sends(response.end_events("failed", error=code))

    def close(self) -> list[Action]:
        """The client is gone: stop all work (no events; nobody is listening)."""
        actions: list[Action] = [CancelTranscribe(job_id) for job_id in self._jobs]
        self._jobs.clear()
        if self._response is not None:
            actions.append(CancelResponse(self._response.id))
            self._response = None
        return actions

    # --- client event handlers ---------------------------------------------------------

    def _on_session_update(self, event: dict[str, Any]) -> list[Action]:
        old = self.config
        self.config = old.updated(event.get("session", {}), self._voice_exists)
        if self.config.input_format != old.input_format:
            self._decoder = InputDecoder(self.config.input_format, ASR_RATE)
        if self.config.turn_detection != old.turn_detection:
            self._input.set_turn_detection(self.config.turn_detection)
        return [self._send("session.updated", session=self.config.to_dict(self.session_id))]

    def _on_append(self, event: dict[str, Any]) -> list[Action]:
        audio_b64 = event.get("audio")
        if not isinstance(audio_b64, str):
            raise ProtocolError("'audio' must be a base64 string", code="invalid_value", param="audio")
        if len(audio_b64) * 3 // 4 > self._limits.max_append_bytes:
            raise ProtocolError(
                f"audio chunk is over the {self._limits.max_append_bytes} byte limit; send smaller appends",
                code="audio_chunk_too_large",
                param="audio",
            )
        try:
            data = base64.b64decode(audio_b64, validate=True)
        except binascii.Error as exc:
            raise ProtocolError("'audio' is not valid base64", code="invalid_base64", param="audio") from exc
        return self._append_decoded(data)

    def append_audio(self, data: bytes) -> list[Action]:
        """Raw input audio in the session's input format (what a media track delivers).
        Like :meth:`receive`, bad audio becomes an ``error`` event."""
        try:
            return self._append_decoded(data)
        except ProtocolError as exc:
            return [Send(exc.to_event())]

    def _append_decoded(self, data: bytes) -> list[Action]:
        try:
            samples = self._decoder.decode(data)
        except AudioFormatError as exc:
            raise ProtocolError(str(exc), code="invalid_audio", param="audio") from exc
        actions: list[Action] = []
        for turn in self._input.push(samples):
            actions.extend(self._on_turn_event(turn))
        return actions

    def _on_commit(self, event: dict[str, Any]) -> list[Action]:
        self._input.push(self._decoder.flush())
        audio = self._input.take_all()
        self._audio_on_hold = False
        if audio.size < ASR_RATE // 10:
            raise ProtocolError(
                "buffer too small: commit needs at least 100 ms of audio",
                code="input_audio_buffer_commit_empty",
            )
        actions = self._drop_speculation()
        return actions + self._commit(self._speech_item_id or new_id("item"), audio, auto_respond=False)

    def _on_clear(self, event: dict[str, Any]) -> list[Action]:
        self._input.take_all()
        self._audio_on_hold = False
        actions = self._drop_speculation()
        self._speech_item_id = None
        return actions + [self._send("input_audio_buffer.cleared")]

    def _on_item_create(self, event: dict[str, Any]) -> list[Action]:
        item = parse_user_item(event.get("item"))
        try:
            previous = self.conversation.add(item, event.get("previous_item_id"))
        except KeyError as exc:
            raise ProtocolError(
                f"previous_item_id {event.get('previous_item_id')!r} is not in the conversation",
                code="item_not_found",
                param="previous_item_id",
            ) from exc
        body = item.to_event_dict()
        return [
            self._send("conversation.item.added", previous_item_id=previous, item=body),
            self._send("conversation.item.done", previous_item_id=previous, item=body),
        ]

    def _on_item_delete(self, event: dict[str, Any]) -> list[Action]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or not self.conversation.delete(item_id):
            raise ProtocolError(f"item {item_id!r} does not exist", code="item_not_found", param="item_id")
        return [self._send("conversation.item.deleted", item_id=item_id)]

    def _on_item_truncate(self, event: dict[str, Any]) -> list[Action]:
        item_id, audio_end_ms = event.get("item_id"), event.get("audio_end_ms")
        item = self.conversation.get(item_id) if isinstance(item_id, str) else None
        if item is None or item.spoken is None:
            raise ProtocolError(
                f"item {item_id!r} is not an assistant audio message", code="item_not_found", param="item_id"
            )
        if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
            raise ProtocolError(
                "audio_end_ms must be a non-negative integer", code="invalid_value", param="audio_end_ms"
            )
        actions: list[Action] = []
        if self._response is not None and self._response.item is item:
            actions += self._cancel_response("client_cancelled")
        if audio_end_ms > item.spoken.audio_ms + 1:
            raise ProtocolError(
                f"audio_end_ms {audio_end_ms} is beyond the {int(item.spoken.audio_ms)} ms of audio sent",
                code="invalid_value",
                param="audio_end_ms",
            )
        item.spoken.truncate(audio_end_ms)
        return actions + [
            self._send("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=audio_end_ms)
        ]

    def _on_response_create(self, event: dict[str, Any]) -> list[Action]:
        if self._response is not None or self._response_waiting is not None:
            raise ProtocolError(
                "a response is already in progress; cancel it or wait for response.done",
                code="conversation_already_has_active_response",
            )
        params = parse_response_params(event.get("response"), self._voice_exists)
        if any(job.committed for job in self._jobs.values()):
            self._response_waiting = _WaitingResponse(params, automatic=False)
            return []
        return self._start_response(params)

    def _on_response_cancel(self, event: dict[str, Any]) -> list[Action]:
        wanted = event.get("response_id")
        if self._response_waiting is not None and self._response is None:
            self._response_waiting = None
            return []
        if self._response is None or (wanted is not None and wanted != self._response.id):
            raise ProtocolError("there is no active response to cancel", code="response_cancel_not_active")
        return self._cancel_response("client_cancelled")

    _handlers: ClassVar[dict[str, Callable[[RealtimeCore, dict[str, Any]], list[Action]]]] = {
        "session.update": _on_session_update,
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_clear,
        "conversation.item.create": _on_item_create,
        "conversation.item.delete": _on_item_delete,
        "conversation.item.truncate": _on_item_truncate,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
    }

    # --- turn taking -------------------------------------------------------------------

    def _on_turn_event(self, turn: TurnEvent) -> list[Action]:
        if isinstance(turn, SpeechStarted):
            item_id = self._speech_item_id = new_id("item")
            started_ms = turn.audio_start_ms
            detection = self.config.turn_detection
            self._audio_on_hold = bool(detection and detection.interrupt_response and self._response is not None)
            return [self._send("input_audio_buffer.speech_started", audio_start_ms=started_ms, item_id=item_id)]
        if isinstance(turn, SpeechConfirmed):
            self._audio_on_hold = False
            detection = self.config.turn_detection
            if detection is not None and detection.interrupt_response and self._response is not None:
                return self._cancel_response("turn_detected")
            return []
        item_id = self._speech_item_id or new_id("item")
        if isinstance(turn, SpeechPaused):
            job_id = new_id("asr")
            self._jobs[job_id] = _TranscriptJob(item_id)
            self._speculative_job = job_id
            actions: list[Action] = [Transcribe(item_id, job_id, turn.audio, self.config.transcription_language)]
            if self.config.turn_detection is not None and self.config.turn_detection.semantic:
                actions.append(PredictTurnEnd(job_id, turn.audio))
            return actions
        if isinstance(turn, SpeechResumed):
            return self._drop_speculation()
        if isinstance(turn, SpeechStopped):
            self._audio_on_hold = False  # too short to interrupt: the agent carries on
            stopped = self._send("input_audio_buffer.speech_stopped", audio_end_ms=turn.audio_end_ms, item_id=item_id)
            self._input.take_all()
            detection = self.config.turn_detection
            return [stopped] + self._commit(
                item_id, turn.audio, auto_respond=bool(detection and detection.create_response)
            )
        return []

    def _commit(self, item_id: str, audio: AudioF32, auto_respond: bool) -> list[Action]:
        self._speech_item_id = None
        item = ConversationItem(id=item_id, role="user", content_type="input_audio", transcript=None)
        previous = self.conversation.add(item)
        actions: list[Action] = [
            self._send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            self._send("conversation.item.added", previous_item_id=previous, item=item.to_event_dict()),
        ]
        job_id = self._speculative_job
        self._speculative_job = None
        if job_id is None:
            job_id = new_id("asr")
            self._jobs[job_id] = _TranscriptJob(item_id)
            actions.append(Transcribe(item_id, job_id, audio, self.config.transcription_language))
        self._jobs[job_id].committed = True
        if auto_respond and self._response is None and self._response_waiting is None:
            self._response_waiting = _WaitingResponse({}, automatic=True)
        if self._jobs[job_id].result is not None:
            actions += self._finish_transcript(job_id)
        return actions

    def _finish_transcript(self, job_id: str) -> list[Action]:
        job = self._jobs.pop(job_id)
        transcript = job.result or ""
        item = self.conversation.get(job.item_id)
        actions: list[Action] = [
            self._send(
                "conversation.item.input_audio_transcription.completed",
                item_id=job.item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(job.duration_s, 3)},
            )
        ]
        if item is not None:
            item.transcript = transcript
            actions.append(self._send("conversation.item.done", item=item.to_event_dict()))
        waiting, self._response_waiting = self._response_waiting, None
        if waiting is not None and transcript:
            waiting = replace(waiting, heard_words=True)
        if waiting is not None and any(j.committed for j in self._jobs.values()):
            self._response_waiting = waiting  # another committed turn is still being transcribed
        elif waiting is not None and (waiting.heard_words or not waiting.automatic):
            actions += self._start_response(waiting.params)
        return actions

    def _drop_speculation(self) -> list[Action]:
        job_id, self._speculative_job = self._speculative_job, None
        if job_id is None:
            return []
        self._jobs.pop(job_id, None)
        return [CancelTranscribe(job_id)]

    # --- responses ---------------------------------------------------------------------

    def _start_response(self, params: dict[str, Any]) -> list[Action]:
        config = replace(self.config, **params)
        messages = self.conversation.chat_messages(config.instructions, self._limits.max_context_items)
        audio = "audio" in config.output_modalities
        response = ResponseState(
            id=new_id("resp"),
            item=ConversationItem(
                id=new_id("item"),
                role="assistant",
                content_type="output_audio" if audio else "output_text",
                status="in_progress",
                spoken=AlignedTranscript() if audio else None,
            ),
            encoder=OutputEncoder(config.output_format, self._tts_rate) if audio else None,
            voice=config.voice,
            max_output_tokens=config.max_output_tokens,
        )
        previous = self.conversation.add(response.item)
        self._response = response
        start = StartResponse(response.id, messages, config.voice, config.speed, config.max_output_tokens, audio)
        return _sends(response.start_events(previous)) + [start]

    def _cancel_response(self, reason: CancelReason) -> list[Action]:
        response, self._response = self._response, None
        self._audio_on_hold = False
        if response is None:
            return []
        cancel: list[Action] = [CancelResponse(response.id)]
        return cancel + _sends(response.end_events("cancelled", reason=reason))

    def _current(self, response_id: str) -> ResponseState | None:
        response = self._response
        return response if response is not None and response.id == response_id else None

    # --- helpers -------------------------------------------------------------------------

    def _parse(self, raw: str | bytes | dict[str, Any]) -> dict[str, Any]:
        if isinstance(raw, dict):
            return raw
        if len(raw) > self._limits.max_event_bytes:
            raise ProtocolError(f"event is over the {self._limits.max_event_bytes} byte limit", code="event_too_large")
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"event is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(event, dict):
            raise ProtocolError("event must be a JSON object", code="invalid_event")
        return event

    @staticmethod
    def _send(event_type: str, **fields: Any) -> Send:
        event: Event = {"type": event_type, "event_id": new_id("event"), **fields}
        return Send(event)


def _sends(events: list[Event]) -> list[Action]:
    return [Send(e) for e in events]
