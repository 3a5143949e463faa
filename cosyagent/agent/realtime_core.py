"""The OpenAI Realtime protocol as a sans-I/O state machine.

Feed it client events (JSON text or dicts) and engine results; it returns the
:class:`~cosyagent.agent.events.Action` list to carry out: events to send, ASR jobs
to run or drop, replies to start or stop, and what the transport's audio sink must do
(play, hold, resume, clear, finish). It never awaits, never touches a socket or a model,
and is driven by tests with plain dicts. Not thread-safe: one event loop owns each core.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from cosyagent.agent.audio_items import has_audio_content, parse_audio_message
from cosyagent.agent.budget import InputAudioBudget
from cosyagent.agent.captions import Captions
from cosyagent.agent.conversation import HEARD_RATE, ConversationItem
from cosyagent.agent.events import (
    Action,
    CancelResponse,
    CancelTurnEnd,
    ClearAudio,
    DraftTranscribe,
    HoldAudio,
    ProtocolError,
    ResumeAudio,
    Send,
    Transcribe,
    new_id,
)
from cosyagent.agent.input_buffer import InputBuffer
from cosyagent.agent.item_events import ItemEvents, timeout_turn, transcription_failed_event
from cosyagent.agent.limits import DEFAULT_LIMITS, CoreLimits
from cosyagent.agent.out_of_band import parse_response_context
from cosyagent.agent.requests import (
    add_created_item,
    check_new_item,
    check_served,
    decode_appended_audio,
    parse_event,
    parse_response_params,
    parse_user_item,
    refuse_unknown_fields,
    without_audio_formats,
)
from cosyagent.agent.response_state import CancelReason
from cosyagent.agent.responses import end_actions
from cosyagent.agent.session_config import SessionConfig
from cosyagent.agent.session_fields import InvalidSessionValue, VoiceNote, no_note
from cosyagent.agent.transcripts import TranscriptJobs, WaitingResponse
from cosyagent.audio.pcm import float_to_pcm16
from cosyagent.audio.wire import AudioFormatError, InputDecoder
from cosyagent.engines.base import AudioF32, VADStream
from cosyagent.pipeline.barge_in import BargeInDecision, BargeInPolicy
from cosyagent.pipeline.turns import (
    SpeechDismissed,
    SpeechPaused,
    SpeechResumed,
    SpeechSoFar,
    SpeechStarted,
    SpeechStopped,
    SpeechSuspected,
    TurnEvent,
)

logger = logging.getLogger(__name__)

ASR_RATE = HEARD_RATE  # the recognizer's rate, at which user audio items keep their audio


class RealtimeCore(ItemEvents):
    def __init__(
        self,
        config: SessionConfig,
        *,
        vad: VADStream,
        tts_sample_rate: int,
        voice_exists: Callable[[str], bool],
        voice_note: VoiceNote = no_note,
        limits: CoreLimits = DEFAULT_LIMITS,
        audio_on_media_tracks: bool = False,
        clock: Callable[[], float] = time.monotonic,
        times_words: bool = False,
        speculate_early: Callable[[], bool] = lambda: False,
        draft_ahead: Callable[[], bool] = lambda: False,
    ) -> None:
        # Audio on media tracks (WebRTC): the ``format`` fields of session.update and
        # response.create do not apply, and reply audio leaves as PlayAudio, not delta events.
        # times_words: the TTS engine can time its words, so timestamps can be sent.
        # speculate_early / draft_ahead: whether the server has room for a pause's transcript
        # sooner / a draft while the speaker talks (see cosyagent.pipeline.turns).
        super().__init__(
            config, tts_sample_rate, limits.max_context_items, audio_on_media_tracks, times_words, ASR_RATE
        )
        self.session_id = new_id("sess")
        self._voice_exists = voice_exists
        self._voice_note = voice_note
        self.limits = limits
        self._decoder = InputDecoder(config.input_format, ASR_RATE)
        self._input = InputBuffer(
            vad, config.turn_detection, ASR_RATE, limits.max_buffer_seconds, speculate_early, draft_ahead
        )
        self._audio_budget = InputAudioBudget(limits.max_input_audio_speed, limits.input_audio_burst_seconds, clock)
        self._speech_item_id: str | None = None  # the user item the current speech will become
        self._jobs = TranscriptJobs()
        self._barge_in = BargeInPolicy()
        self._captions = Captions()

    # --- inputs ----------------------------------------------------------------------

    def start(self) -> list[Action]:
        created = self._send("session.created", session=self.config.to_dict(self.session_id))
        return [created, *self.timestamps_notice(session_start=True)]

    def receive(self, raw: str | bytes | dict[str, Any]) -> list[Action]:
        """Handle one client event. Bad input becomes an ``error`` event, never an exception."""
        event_id: str | None = None
        try:
            event = parse_event(raw, self.limits.max_event_bytes)
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            event_type = event.get("type")
            if not isinstance(event_type, str):
                raise ProtocolError("'type' must be a string naming a client event", code="invalid_event", param="type")
            handler = self._handlers.get(event_type)
            if handler is None:
                raise ProtocolError(
                    f"unknown or unsupported event type {event_type!r}", code="invalid_event", param="type"
                )
            refuse_unknown_fields(event_type, event)
            check_served(event_type, self.config)
            return handler(self, event)
        except ProtocolError as exc:
            exc.event_id = exc.event_id or event_id
            return [Send(exc.to_event())]
        except InvalidSessionValue as exc:
            return [Send(ProtocolError(str(exc), code=exc.code, param=exc.param, event_id=event_id).to_event())]

    def transcription_done(self, job_id: str, text: str, duration_s: float) -> list[Action]:
        job = self._jobs.get(job_id)
        if job is None:
            return []
        job.result, job.duration_s = text.strip(), duration_s
        if job.committed:
            return self._finish_transcript(job_id)
        latest = self._jobs.speculative == job_id and self._jobs.waiting is None and not self._jobs.any_committed()
        if not latest:
            return []
        return self.heard_so_far(job.item_id, job.result) + self._reply_ahead(job_id, job.item_id, job.result)

    def turn_end_predicted(self, job_id: str, probability: float) -> list[Action]:
        """The end-of-turn model's verdict on the pause that started ``job_id``: end the turn now
        if it is sure enough and the speaker is still quiet (otherwise the silence wait goes on)."""
        detection = self.config.turn_detection
        if detection is None or self._jobs.speculative != job_id or probability < detection.turn_end_probability:
            return []
        actions: list[Action] = []
        for turn in self._input.end_turn():
            actions += self._on_turn_event(turn)
        return actions

    def transcription_failed(self, job_id: str, message: str, code: str | None = None) -> list[Action]:
        """``code``: the client's audio could not be transcribed (``invalid_request_error``);
        None: the recognizer failed (``server_error``)."""
        job = self._jobs.pop(job_id)
        if job is None:
            return []
        self._jobs.waiting = None
        return [transcription_failed_event(job.item_id, message, code)]

    def audio_on_hold(self) -> bool:
        """True while unconfirmed user speech pauses reply audio; the I/O layer must not
        pop audio then, and should try again after the next client event."""
        return self._barge_in.holding

    def close(self) -> list[Action]:
        """The client is gone: stop all work (no events; nobody is listening)."""
        actions: list[Action] = [*self._jobs.cancel_all()]
        if self._response is not None:
            actions.append(CancelResponse(self._response.id))
            self._response = None
        return actions

    # --- client event handlers ---------------------------------------------------------

    def _on_session_update(self, event: dict[str, Any]) -> list[Action]:
        old = self.config
        body = event.get("session", {})
        begun = len(self.conversation) > 0 or self._response is not None
        self.config = old.updated(self._applicable(body), self._voice_exists, self._voice_note, not begun)
        if self.config.input_format != old.input_format:
            self._decoder = InputDecoder(self.config.input_format, ASR_RATE)
        if self.config.turn_detection != old.turn_detection:
            self._input.set_turn_detection(self.config.turn_detection)
        return [self._send("session.updated", session=self.config.to_dict(self.session_id)), *self.timestamps_notice()]

    def _on_append(self, event: dict[str, Any]) -> list[Action]:
        return self._append_decoded(decode_appended_audio(event.get("audio"), self.limits.max_append_bytes))

    def append_audio(self, data: bytes) -> list[Action]:
        """Raw input audio in the session's input format, from a media stream (not base64 events).
        Like :meth:`receive`, bad audio becomes an ``error`` event."""
        try:
            return self._append_decoded(data)
        except ProtocolError as exc:
            return [Send(exc.to_event())]

    def append_samples(self, samples: AudioF32) -> list[Action]:
        """Input audio already at the ASR rate (16 kHz floats): a media track resamples the
        caller's audio once, straight to this rate. Audio past the input budget is refused."""
        if (refused := self._audio_budget.refusal(samples.size / ASR_RATE)) is not None:
            return [Send(refused.to_event())]
        actions: list[Action] = []
        self.idle.heard(samples.size)
        for turn in self._input.push(samples):
            actions.extend(self._on_turn_event(turn))
        detection = self.config.turn_detection
        if self._response is None and self._jobs.waiting is None and not self._jobs.any_committed():
            span = self.idle.due(detection.idle_timeout_ms if detection is not None else None)
            if span is not None:
                item_id, self._speech_item_id = self._speech_item_id or new_id("item"), None
                self._input.take_all()
                actions += [*self._jobs.drop_speculation(), *timeout_turn(span, item_id, self.conversation)]
                actions += self._start_response({}, script=self.config.idle_message)
        return actions

    def _append_decoded(self, data: bytes) -> list[Action]:
        try:
            samples = self._decoder.decode(data)
        except AudioFormatError as exc:
            raise ProtocolError(str(exc), code="invalid_audio", param="audio") from exc
        return self.append_samples(samples)

    def _on_commit(self, event: dict[str, Any]) -> list[Action]:
        self._jobs.check_backlog(self.limits.max_pending_transcripts)
        self._input.push(self._decoder.flush())
        audio = self._input.take_all()
        if audio.size < ASR_RATE // 10:  # (speech over a reply, which holds it, is never this short)
            raise ProtocolError(
                "buffer too small: commit needs at least 100 ms of audio",
                code="input_audio_buffer_commit_empty",
            )
        actions = self._barge_in_actions(self._barge_in.release()) + [*self._jobs.drop_speculation()]
        return actions + self._commit(self._speech_item_id or new_id("item"), audio, auto_respond=False)

    def _on_clear(self, event: dict[str, Any]) -> list[Action]:
        self._input.take_all()
        actions = self._barge_in_actions(self._barge_in.release()) + [*self._jobs.drop_speculation()]
        self._speech_item_id = None
        return actions + [self._send("input_audio_buffer.cleared")]

    def _on_item_create(self, event: dict[str, Any]) -> list[Action]:
        raw = event.get("item")
        check_new_item(raw, self.conversation)
        audio = None
        if has_audio_content(raw):
            self._jobs.check_backlog(self.limits.max_pending_transcripts)
            item, audio = parse_audio_message(event["item"], self.config.input_format, ASR_RATE, "item")
            if (refused := self._audio_budget.refusal(audio.size / ASR_RATE)) is not None:
                return [Send(refused.to_event())]
            item.heard = float_to_pcm16(audio)
        else:
            item = parse_user_item(raw, self.conversation)
        previous = add_created_item(event, item, self.conversation)
        added = self._send("conversation.item.added", previous_item_id=previous, item=item.to_event_dict())
        if audio is not None and item.transcript is None:  # the LLM reads its words once transcribed
            job_id = self._jobs.start(item.id, speculative=False, committed=True)
            return [added, Transcribe(item.id, job_id, audio, self.config.transcription_language)]
        return [added, self._send("conversation.item.done", previous_item_id=previous, item=item.to_event_dict())]

    def _on_response_create(self, event: dict[str, Any]) -> list[Action]:
        if self._response is not None or self._jobs.waiting is not None:
            raise ProtocolError(
                "a response is already in progress; cancel it or wait for response.done",
                code="conversation_already_has_active_response",
            )
        body = event.get("response")
        params = parse_response_params(self._applicable(body), self._voice_exists, self.config, self._voice_note)
        context = parse_response_context(body, self.conversation, self.config.input_format, ASR_RATE)
        if self._jobs.any_committed():
            self._jobs.waiting = WaitingResponse(params, automatic=False, context=context)
            return []
        return self._start_response(params, context)

    def _on_response_cancel(self, event: dict[str, Any]) -> list[Action]:
        wanted = event.get("response_id")
        if self._jobs.waiting is not None and self._response is None:
            self._jobs.waiting = None
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
        "conversation.item.delete": ItemEvents._on_item_delete,
        "conversation.item.retrieve": ItemEvents._on_item_retrieve,
        "conversation.item.truncate": ItemEvents._on_item_truncate,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
    }

    # --- turn taking -------------------------------------------------------------------

    def _on_turn_event(self, turn: TurnEvent) -> list[Action]:
        detection = self.config.turn_detection
        speaking = bool(detection and detection.interrupt_response and self._response is not None)
        decision = self._barge_in.on_turn(turn, agent_speaking=speaking)
        actions = self._barge_in_actions(decision)
        if isinstance(turn, SpeechSuspected | SpeechDismissed):
            return actions  # the reply's audio alone: no turn yet
        if isinstance(turn, SpeechStarted):
            self.idle.disarm()
            item_id = self._speech_item_id = new_id("item")
            start_ms = turn.audio_start_ms
            return [self._send("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=item_id), *actions]
        item_id = self._speech_item_id or new_id("item")
        if isinstance(turn, SpeechPaused):
            actions += self._jobs.speculate(item_id, turn, detection, self.config.transcription_language)
        elif isinstance(turn, SpeechResumed):
            actions += self._jobs.drop_speculation()
        elif isinstance(turn, SpeechSoFar):
            actions.append(DraftTranscribe(item_id, turn.audio, self.config.transcription_language))
        elif isinstance(turn, SpeechStopped):
            stopped = self._send("input_audio_buffer.speech_stopped", audio_end_ms=turn.audio_end_ms, item_id=item_id)
            self._input.take_all()
            return [stopped] + actions + self._commit(item_id, turn.audio, self.config.replies_to_turns)
        return actions

    def _barge_in_actions(self, decision: BargeInDecision | None) -> list[Action]:
        if decision == "hold":
            return [HoldAudio()]
        if decision == "resume":
            return [ResumeAudio()]
        if decision == "interrupt":
            return self._cancel_response("turn_detected")
        return []

    def _commit(self, item_id: str, audio: AudioF32, auto_respond: bool) -> list[Action]:
        self._speech_item_id = None
        item = ConversationItem(id=item_id, role="user", content_type="input_audio", heard=float_to_pcm16(audio))
        previous = self.conversation.add(item)
        actions: list[Action] = [
            self._send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            self._send("conversation.item.added", previous_item_id=previous, item=item.to_event_dict()),
        ]
        job_id = self._jobs.commit_speculation()
        if job_id is None:
            job_id = self._jobs.start(item_id, speculative=False)
            actions.append(Transcribe(item_id, job_id, audio, self.config.transcription_language))
        elif self.config.turn_detection is not None and self.config.turn_detection.semantic:
            actions.append(CancelTurnEnd(job_id))  # the turn has ended: its verdict is not needed
        job = self._jobs.get(job_id)
        assert job is not None
        job.committed = True
        if auto_respond and self._response is None and self._jobs.waiting is None:
            self._jobs.waiting = WaitingResponse({}, automatic=True)
        if job.result is not None:
            actions += self._finish_transcript(job_id)
        return actions

    def _finish_transcript(self, job_id: str) -> list[Action]:
        job = self._jobs.pop(job_id)
        assert job is not None
        transcript = job.result or ""
        item = self.conversation.get(job.item_id)
        actions = self._transcript_told(job.item_id, transcript, job.duration_s)
        if item is not None:
            item.transcript = transcript
            actions.append(self._send("conversation.item.done", item=item.to_event_dict()))
        waiting = self._jobs.response_after(transcript)
        if waiting is not None:
            actions += self._start_response(waiting.params, waiting.context)
        return actions

    # --- responses ---------------------------------------------------------------------

    def _cancel_response(self, reason: CancelReason) -> list[Action]:
        response, self._response = self._response, None
        released = self._barge_in.release()
        if response is None:
            return self._barge_in_actions(released)
        if reason == "client_cancelled":  # (after a barge-in the user is speaking: no idle timeout)
            self.idle.response_ended(response.sent_ms)
        cancel: list[Action] = [CancelResponse(response.id)]  # its ClearAudio drops any hold too
        return cancel + end_actions(response.end_events("cancelled", reason=reason), ClearAudio())

    # --- helpers -------------------------------------------------------------------------

    def _applicable(self, body: Any) -> Any:
        """A session or response body as it applies here: on media tracks, without formats."""
        return without_audio_formats(body) if self.audio_on_media_tracks else body
