"""The reply side of the Realtime core: one response at a time, fed by the engines.

A response is started from the conversation, then fed text or synthesized audio, which
the I/O layer pops at its own pace, and ended: completed (or incomplete: the LLM stopped
short), failed or cancelled. Its end events carry what the transport's audio sink must do
(finish, or clear) just before ``response.done``. Sans-I/O, like the core that extends it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cosyagent.agent.conversation import OPENING_LINE, AlignedTranscript, Conversation, ConversationItem
from cosyagent.agent.events import (
    Action,
    ClearAudio,
    Event,
    FinishAudio,
    PrefetchReply,
    ProtocolError,
    ReadAhead,
    Send,
    SinkAction,
    StartResponse,
    new_id,
    server_error_event,
)
from cosyagent.agent.idle_timeout import IdleTimer
from cosyagent.agent.out_of_band import IN_CONVERSATION, ResponseContext, context_messages
from cosyagent.agent.response_state import ResponseState
from cosyagent.agent.session_config import SessionConfig
from cosyagent.agent.tools import chat_tools
from cosyagent.audio.wire import OutputEncoder
from cosyagent.engines.base import AudioF32, ToolCallDelta
from cosyagent.pipeline.reply import IncompleteReason
from cosyagent.pipeline.timestamps import MarkQueue, SpeechTimings

TIMESTAMPS_PARAM = "session.audio.output.timestamps"


class ResponseOutput:
    """The core's responses; :class:`~cosyagent.agent.realtime_core.RealtimeCore` adds the
    client events and turn taking that start and cancel them."""

    def __init__(
        self,
        config: SessionConfig,
        tts_sample_rate: int,
        max_context_items: int,
        media: bool,
        times_words: bool,
        input_rate: int,
    ) -> None:
        self.config = config
        self._times_words = times_words  # the TTS engine can time its words (timestamps are possible)
        self._told_untimed = False
        self._started = False  # session.created has gone: a session configured before it is told then
        self.conversation = Conversation()
        self._tts_rate = tts_sample_rate
        self._max_context_items = max_context_items
        # Audio on media tracks (WebRTC): reply audio leaves as PlayAudio, not delta events.
        self.audio_on_media_tracks = media
        self._response: ResponseState | None = None
        self.idle = IdleTimer(input_rate)  # server_vad's idle_timeout_ms

    def response_text(self, response_id: str, delta: str) -> list[Action]:
        response = self._current(response_id)
        return _sends(response.text_delta(delta)) if response and not response.audio else []

    def response_tool_call(self, response_id: str, piece: ToolCallDelta | None) -> list[Action]:
        """A piece of a function call the LLM is making; None: the LLM is done, so are its calls."""
        response = self._current(response_id)
        return _sends(response.tool_call(piece)) if response else []

    def response_audio(
        self, response_id: str, samples: AudioF32, clause: str | None, timings: SpeechTimings | None = None
    ) -> None:
        """Plan synthesized audio (and its timings) for sending; :meth:`pop_audio` releases it."""
        response = self._current(response_id)
        if response is not None and response.audio:
            response.plan_audio(samples, clause, timings)

    def timestamps_notice(self, *, session_start: bool = False) -> list[Action]:
        """Timestamps asked for from an engine that cannot time its words: say so, once a session
        (an ``error`` event that ends nothing: the audio still plays, without timestamps), after
        ``session.created`` (``session_start``: it has just been sent)."""
        self._started = self._started or session_start
        if not self._started or not self.config.timestamps or self._times_words or self._told_untimed:
            return []
        self._told_untimed = True
        refusal = ProtocolError(
            "this server's voice engine cannot time its words: replies will have audio but no"
            " response.output_audio_timestamps.delta events (its duration output is missing)",
            code="timestamps_unavailable",
            param=TIMESTAMPS_PARAM,
        )
        return [Send(refusal.to_event())]

    def pending_audio_ms(self, response_id: str) -> float:
        response = self._current(response_id)
        return response.pending_ms if response else 0.0

    def sent_audio_ms(self, response_id: str) -> float:
        response = self._current(response_id)
        return response.sent_ms if response else 0.0

    def flush_audio(self, response_id: str) -> None:
        """The synthesizer is done: plan the audio still held in the output resampler."""
        response = self._current(response_id)
        if response is not None:
            response.flush_audio()

    def pop_audio(self, response_id: str) -> list[Action]:
        response = self._current(response_id)
        if response is None:
            return []
        if response.outbox:
            self.idle.audio_started()
        return response.pop_audio()

    def response_finished(
        self,
        response_id: str,
        timings: dict[str, Any] | None = None,
        unplayed_ms: float | None = None,
        llm_text: str | None = None,
        incomplete: IncompleteReason | None = None,
    ) -> list[Action]:
        """The generator is done; everything planned must have been popped already. ``unplayed_ms``:
        how much of the sent audio the listener has still to hear, if the I/O layer knows;
        ``llm_text``: the LLM's own text of the reply, all of it spoken (the LLM's view of it);
        ``incomplete``: why the LLM stopped short, if it did (the response ends ``incomplete``)."""
        response = self._current(response_id)
        if response is None:
            return []
        response.timings = timings or {}
        if response.audio:
            response.item.llm_text = llm_text
        self._response = None
        self.idle.response_ended(response.sent_ms, unplayed_ms)
        ending = response.end_events("incomplete" if incomplete else "completed", reason=incomplete)
        return end_actions(ending, FinishAudio(response.id))

    def response_failed(self, response_id: str, message: str, code: str) -> list[Action]:
        response = self._current(response_id)
        if response is None:
            return []
        self._response = None
        self.idle.response_ended(response.sent_ms)
        events: list[Action] = [Send(server_error_event(message, code))]
        return events + end_actions(response.end_events("failed", error=code), ClearAudio())

    def _conversation_view(self, params: dict[str, Any], instructions: str) -> list[dict[str, Any]]:
        """The LLM's view of the conversation for a reply: ``instructions``, then what was said.
        Nothing said and no instructions of the reply's own: the caller picking up (OPENING_LINE).
        The agent spoke last and the reply brings instructions (a bridge's "Ask whether the caller
        is still there"): the session's instructions, what was said, then the reply's as the line to
        answer. Shown them in place of the session's, the embedded model repeated its last reply or
        refused, 0 times in 32 as told; this way it spoke them to the caller 8-10 times in 32
        (benchmarks/results/reply-instructions-2026-12-07/). Neither line is an item."""
        said = self.conversation.chat_messages("", self._max_context_items)  # no system message
        if not said and "instructions" not in params:
            return [*_system(instructions), {"role": "user", "content": OPENING_LINE}]
        if said and said[-1]["role"] == "assistant" and params.get("instructions", "").strip():
            return [*_system(self.config.instructions), *said, {"role": "user", "content": params["instructions"]}]
        return [*_system(instructions), *said]

    def _start_response(
        self, params: dict[str, Any], context: ResponseContext = IN_CONVERSATION, script: str | None = None
    ) -> list[Action]:
        """Start a response; ``context``: where it reads from and writes to (out of band, its own
        input); ``script``: its words, as given, instead of the LLM's."""
        config = replace(self.config, **params)
        if context.input is None:
            messages = self._conversation_view(params, config.instructions)
        else:  # (an out-of-band input, even an empty one, is the context as given)
            messages = context_messages(context.input, config.instructions)
        # An out-of-band response's items live in a conversation of their own, never shown.
        home = Conversation() if context.out_of_band else self.conversation
        audio = "audio" in config.output_modalities
        tools, tool_choice = chat_tools(config.tools, config.tool_choice)
        timed = audio and bool(config.timestamps) and self._times_words
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
            media_rate=self._tts_rate if self.audio_on_media_tracks else None,
            conversation=home if tools else None,
            marks=MarkQueue(config.timestamps, self._tts_rate) if timed else None,
            out_of_band=context.out_of_band,
            metadata=context.metadata,
        )
        previous = home.add(response.item)
        self._response = response
        self.idle.response_started()
        start = StartResponse(
            response.id,
            messages,
            config.voice,
            config.speed,
            config.max_output_tokens,
            audio,
            tools,
            tool_choice,
            timestamps=timed,
            script=script,
        )
        return _sends(response.start_events(previous)) + [start]

    def _reply_ahead(self, job_id: str, item_id: str, transcript: str) -> list[Action]:
        """A pause's transcript is in: the LLM request of the automatic reply that will follow if
        the turn ends on this pause, when the silence wait decides the turn (``server_vad``).
        With ``semantic_vad`` Smart Turn's verdict most often ends the turn ~50 ms after the
        transcript: too little head start to pay for the requests dropped (measured:
        docs/benchmarks.md, "A reply's LLM request sent while the silence wait runs")."""
        detection = self.config.turn_detection
        request = self._auto_reply_request(item_id, transcript)
        if request is None or detection is None or detection.semantic:
            return []
        messages, audio, tools, tool_choice = request
        return [PrefetchReply(job_id, messages, self.config.max_output_tokens, audio, tools, tool_choice)]

    def read_ahead(self, item_id: str, draft: str) -> list[Action]:
        """A draft of the turn ``item_id`` is in while its speaker talks: the prompt of the
        automatic reply that would follow were the turn to end on these words, for the LLM to
        read now (whatever the turn detection)."""
        request = self._auto_reply_request(item_id, draft)
        if request is None:
            return []
        messages, audio, tools, tool_choice = request
        return [ReadAhead(item_id, messages, audio, tools, tool_choice)]

    def _auto_reply_request(
        self, item_id: str, transcript: str
    ) -> tuple[list[dict[str, Any]], bool, tuple[dict[str, Any], ...], str] | None:
        """The messages, audio flag, tools and tool choice of the automatic reply that follows if
        the turn ``item_id`` ends on ``transcript`` (as :meth:`_start_response` will make it, with
        the user item committed); None when no such reply will follow or one is under way."""
        if not transcript or self._response is not None or not self.config.replies_to_turns:
            return None
        config = self.config
        said = ConversationItem(id=item_id, role="user", content_type="input_audio", transcript=transcript)
        messages = self.conversation.chat_messages(config.instructions, self._max_context_items, then=said)
        tools, tool_choice = chat_tools(config.tools, config.tool_choice)
        return messages, "audio" in config.output_modalities, tools, tool_choice

    def _current(self, response_id: str) -> ResponseState | None:
        response = self._response
        return response if response is not None and response.id == response_id else None


def _sends(events: list[Event]) -> list[Action]:
    return [Send(e) for e in events]


def end_actions(events: list[Event], sink: SinkAction) -> list[Action]:
    """A response's end events, with what its audio sink must do just before ``response.done``."""
    return [*_sends(events[:-1]), sink, Send(events[-1])]


def _system(instructions: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": instructions}] if instructions else []
