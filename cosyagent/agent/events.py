"""Realtime API wire vocabulary: ids, the error type, and the actions the core asks for.

Event shapes follow openai-python's ``src/openai/types/realtime/`` (GA protocol).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from cosyagent.engines.base import AudioF32

Event = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class ProtocolError(Exception):
    """A client event we refuse. Becomes an ``error`` event; the session goes on."""

    def __init__(self, message: str, *, code: str, param: str | None = None, event_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id

    def to_event(self) -> Event:
        return {
            "type": "error",
            "event_id": new_id("event"),
            "error": {
                "type": "invalid_request_error",
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "event_id": self.event_id,
            },
        }


def server_error_event(message: str, code: str, event_id: str | None = None) -> Event:
    """An ``error`` event for failures on our side (an engine down, a crashed task)."""
    event = ProtocolError(message, code=code, event_id=event_id).to_event()
    event["error"]["type"] = "server_error"
    return event


# --- What the sans-I/O core asks its I/O layer to do -----------------------------------


@dataclass(frozen=True)
class Send:
    event: Event


@dataclass(frozen=True)
class Transcribe:
    """Run ASR on ``audio`` (16 kHz) for ``item_id``; report with ``transcription_done``."""

    item_id: str
    job_id: str
    audio: AudioF32 = field(repr=False)
    language: str | None = None
    due_in_ms: int = 0  # when the transcript is needed: a speculative one, once the silence wait can end


@dataclass(frozen=True)
class DraftTranscribe:
    """Transcribe the utterance so far of ``item_id`` (its speaker still talking) as a draft
    for its transcript: a speed-up only, never reported, dropped when the CPU is wanted."""

    item_id: str
    audio: AudioF32 = field(repr=False)
    language: str | None = None


@dataclass(frozen=True)
class CancelTranscribe:
    job_id: str


@dataclass(frozen=True)
class PredictTurnEnd:
    """Ask the end-of-turn model whether the paused utterance is finished; report with
    ``turn_end_predicted``. Cancelled together with the speculative transcript ``job_id``,
    and alone (:class:`CancelTurnEnd`) once the turn has ended without it."""

    job_id: str
    audio: AudioF32 = field(repr=False)
    due_in_ms: int = 0  # after this the silence wait ends the turn anyway: the verdict is useless


@dataclass(frozen=True)
class CancelTurnEnd:
    job_id: str


@dataclass(frozen=True)
class StartResponse:
    """Generate a reply; feed its output back with ``response_text`` / ``response_audio``
    and end it with ``response_finished`` or ``response_failed``."""

    response_id: str
    messages: list[dict[str, Any]]
    voice: str
    speed: float
    max_tokens: int | None
    audio: bool
    tools: tuple[dict[str, Any], ...] = ()  # chat-completions tools the LLM is offered
    tool_choice: str = "auto"  # auto, none or required
    timestamps: bool = False  # synthesize with word and phoneme timings (feed them to ``response_audio``)
    script: str | None = None  # the reply's words as given (not asked of the LLM): the idle timeout's line


@dataclass(frozen=True)
class PrefetchReply:
    """The speaker paused and ``job_id``'s transcript is in: if the turn ends on this pause, the
    automatic reply will ask the LLM exactly this, so ask now (:mod:`cosyagent.pipeline.llm_prefetch`).
    Dropped with the transcript (``CancelTranscribe``) when the speaker goes on."""

    job_id: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    audio: bool
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str = "auto"


@dataclass(frozen=True)
class ReadAhead:
    """A draft of the turn ``item_id`` is in while its speaker talks: were the turn to end on these
    words, the automatic reply would ask the LLM this. Have the LLM read its prompt now, so that
    the reply's own request finds most of it in the LLM's cache (:mod:`cosyagent.pipeline.llm_prefetch`)."""

    item_id: str
    messages: list[dict[str, Any]]
    audio: bool
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str = "auto"


@dataclass(frozen=True)
class CancelResponse:
    """Stop generating ``response_id`` now. The core has already ended it on the wire."""

    response_id: str


# --- What the core asks of the transport's audio sink (see cosyagent.pipeline.playout) ----


@dataclass(frozen=True)
class PlayAudio:
    """A piece of reply audio for a sink that plays it on a media track (on other
    transports the audio travels as ``response.output_audio.delta`` events)."""

    response_id: str
    samples: AudioF32 = field(repr=False)
    sample_rate: int


@dataclass(frozen=True)
class HoldAudio:
    """Unconfirmed user speech: pause the reply's audio until ``ResumeAudio`` or a clear."""


@dataclass(frozen=True)
class ResumeAudio:
    pass


@dataclass(frozen=True)
class ClearAudio:
    """The response was cancelled or failed: the user must stop hearing it now."""


@dataclass(frozen=True)
class FinishAudio:
    """The response completed: all its audio has been handed out."""

    response_id: str


SinkAction = PlayAudio | HoldAudio | ResumeAudio | ClearAudio | FinishAudio
Action = (
    Send
    | Transcribe
    | DraftTranscribe
    | CancelTranscribe
    | PredictTurnEnd
    | CancelTurnEnd
    | StartResponse
    | PrefetchReply
    | ReadAhead
    | CancelResponse
    | SinkAction
)
