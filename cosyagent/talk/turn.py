"""One user turn, sans I/O: the stamped events from the end of the user's speech to the reply that answered it."""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field

from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionFailedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
)

from cosyagent.talk.clip import RATE, TalkError
from cosyagent.talk.connection import EventStream, Stamped

logger = logging.getLogger(__name__)

# A response that ended on its own: "incomplete" is one the LLM stopped short (the token cap),
# all of whose words were said; cancelled and failed ones were cut off.
SAID_TO_ITS_END = ("completed", "incomplete")


def elapsed_ms(start: float | None, end: float | None) -> float | None:
    """Milliseconds from ``start`` to ``end`` (monotonic seconds); None if either is unknown."""
    return None if start is None or end is None else round((end - start) * 1000.0, 1)


@dataclass
class TurnResult:
    """What happened between the end of the user's speech and the reply that answered it.
    Times are ``time.monotonic()``; ``None`` when the event never came."""

    speech_end_at: float
    user_transcripts: list[str] = field(default_factory=list)
    response_id: str | None = None
    status: str | None = None  # of the final response: completed, incomplete, cancelled or failed
    reply_text: str = ""
    first_clause_text: str = ""  # the reply's first transcript delta: the text of its first audio
    reply_pcm16: bytearray = field(default_factory=bytearray)
    stopped_at: float | None = None  # the speech_stopped that led to the reply
    vad_audio_end_ms: int | None = None  # its audio_end_ms (server's stream position)
    transcribed_at: float | None = None  # that item's transcription.completed
    created_at: float | None = None
    first_audio_at: float | None = None
    done_at: float | None = None
    server_timings_ms: dict[str, float] = field(default_factory=dict)
    interrupted_responses: list[str] = field(default_factory=list)  # cancelled ones before the reply
    late_audio_deltas: int = 0  # audio deltas of a response after its response.done (must stay 0)
    # Played from its first audio on, how long the reply would have gone silent waiting for audio.
    stall_ms: float = 0.0
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def voice_to_voice_ms(self) -> float | None:
        return elapsed_ms(self.speech_end_at, self.first_audio_at)

    @property
    def end_of_turn_ms(self) -> float | None:
        return elapsed_ms(self.speech_end_at, self.stopped_at)

    @property
    def asr_ms(self) -> float | None:
        return elapsed_ms(self.stopped_at, self.transcribed_at)

    @property
    def reply_audio_s(self) -> float:
        return len(self.reply_pcm16) / (2 * RATE)


class TurnCollector:
    """Feeds on stamped events until a response completes. A response cancelled on the way
    (speech in the clip interrupted it) is noted and the collector waits for the next one."""

    def __init__(self, speech_end_at: float) -> None:
        self.result = TurnResult(speech_end_at=speech_end_at)
        self._current: str | None = None
        self._done: set[str] = set()
        self._last_stop: tuple[float, str, int] | None = None
        self._transcribed: dict[str, float] = {}

    @property
    def complete(self) -> bool:
        return self.result.status in SAID_TO_ITS_END

    def feed(self, item: Stamped) -> bool:
        """Take one event; True once the turn's reply is complete. Error events raise. After
        completion, events are only checked for late audio (and kept in the timeline)."""
        result, event, at = self.result, item.event, item.at
        result.timeline.append((round(at - result.speech_end_at, 3), item.type))
        if isinstance(event, RealtimeErrorEvent):
            raise TalkError(f"server error: {event.error.message} ({event.error.code or event.error.type})")
        if self.complete:
            if isinstance(event, ResponseAudioDeltaEvent) and event.response_id in self._done:
                result.late_audio_deltas += 1
            return True
        if isinstance(event, InputAudioBufferSpeechStoppedEvent):
            self._last_stop = (at, event.item_id, event.audio_end_ms)
        elif isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
            result.user_transcripts.append(event.transcript)
            self._transcribed[event.item_id] = at
        elif isinstance(event, ConversationItemInputAudioTranscriptionFailedEvent):
            logger.warning("transcription failed: %s", event.error.message)
        elif isinstance(event, ResponseCreatedEvent):
            self._start(event.response.id or "", at)
        elif isinstance(event, ResponseAudioDeltaEvent):
            self._audio(event, at)
        elif isinstance(event, ResponseAudioTranscriptDeltaEvent) and event.response_id == self._current:
            result.first_clause_text = result.first_clause_text or event.delta
            result.reply_text += event.delta
        elif isinstance(event, ResponseDoneEvent):
            return self._finish(event, at)
        return False

    def _start(self, response_id: str, at: float) -> None:
        result = self.result
        self._current, result.response_id, result.created_at = response_id, response_id, at
        result.reply_text, result.first_clause_text, result.reply_pcm16 = "", "", bytearray()
        result.first_audio_at, result.stall_ms = None, 0.0
        if self._last_stop is not None:
            result.stopped_at, stopped_item, result.vad_audio_end_ms = self._last_stop
            result.transcribed_at = self._transcribed.get(stopped_item)

    def _audio(self, event: ResponseAudioDeltaEvent, at: float) -> None:
        if event.response_id in self._done:
            self.result.late_audio_deltas += 1
        elif event.response_id == self._current:
            result = self.result
            if result.first_audio_at is None:
                result.first_audio_at = at
            due = result.first_audio_at + result.reply_audio_s + result.stall_ms / 1000.0
            result.stall_ms += max(0.0, at - due) * 1000.0  # the audio so far ran out before this came
            result.reply_pcm16.extend(base64.b64decode(event.delta))

    def _finish(self, event: ResponseDoneEvent, at: float) -> bool:
        response_id = event.response.id or ""
        self._done.add(response_id)
        if response_id != self._current:
            return False
        self._current = None
        result = self.result
        result.status, result.done_at = event.response.status, at
        if result.status not in SAID_TO_ITS_END:
            result.interrupted_responses.append(response_id)
            return False
        timings = (event.model_extra or {}).get("x_cosyagent_timings_ms") or {}
        result.server_timings_ms = {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}
        return True


async def collect_turn(events: EventStream, speech_end_at: float, idle_timeout_s: float) -> TurnResult:
    """Collect events until a response completes; ``TimeoutError`` once the server has sent
    nothing for ``idle_timeout_s`` (a long reply is fine: its audio keeps arriving)."""
    collector = TurnCollector(speech_end_at)
    while not collector.feed(await events.next(time.monotonic() + idle_timeout_s)):
        pass
    return collector.result
