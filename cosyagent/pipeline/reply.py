"""One assistant reply: LLM tokens -> synthesized audio (through the one speak path), as one async stream.

With tools offered, the LLM's tool-call pieces go to the request's ``on_tool_call`` the moment
they arrive (then None, once the LLM has finished), while its text is being spoken.

Closing the stream (or cancelling its consumer) closes the LLM's HTTP stream and fires
the synthesizer's cancel token, so both really stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from cosyagent.engines.base import AudioF32, ChatFinished, ChatLLM, ChatMessage, SpeechSynthesizer, ToolCallDelta
from cosyagent.engines.scheduling import cpu_scheduler, job_deadline
from cosyagent.pipeline.llm_prefetch import llm_request
from cosyagent.pipeline.repetition import until_it_repeats
from cosyagent.pipeline.speak import speak
from cosyagent.pipeline.timestamps import SpeechTimings
from cosyagent.pipeline.voice_language import firmer, speakable_opening, speaks_no_chinese

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextDelta:
    """Raw LLM text, for text-only replies."""

    text: str


@dataclass(frozen=True)
class AudioChunk:
    """Synthesized audio; the first chunk of each clause carries the clause's text."""

    samples: AudioF32
    clause: str | None
    timings: SpeechTimings | None = None  # when its words and visemes are heard (a timed request)


@dataclass(frozen=True)
class SpokenText:
    """The LLM's own text of a reply spoken to its end: the last event of such a reply.

    The transcript keeps the words as spoken (markup and line breaks dropped); the conversation
    sends this text back to the LLM instead, token for token what its server has cached, so the
    next turn's prompt reads only the new message (a reply with line breaks, sent back as
    spoken, made the next turn re-read the whole reply: ~0.3 s on 2 cores).
    """

    text: str


IncompleteReason = Literal["max_output_tokens", "content_filter"]


@dataclass(frozen=True)
class ReplyIncomplete:
    """The last event of a reply whose LLM stopped before its answer did: at the token cap
    (``max_output_tokens``) or by its content filter. Everything before it was said (the Realtime
    API ends such a response ``incomplete``, with this reason)."""

    reason: IncompleteReason


ReplyEvent = TextDelta | AudioChunk | SpokenText | ReplyIncomplete

# chat-completions finish_reason -> why the reply is incomplete (the others end it complete)
_INCOMPLETE: dict[str | None, IncompleteReason] = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass
class _LLMFinish:
    """Why the reply's LLM stream ended (its last :class:`ChatFinished`); None until it says."""

    reason: str | None = None


@dataclass
class ReplyTimings:
    """Seconds from the start of the reply to each milestone (None if not reached)."""

    started: float = field(default_factory=time.monotonic)
    llm_first_token: float | None = None
    first_clause: float | None = None
    tts_first_audio: float | None = None

    def mark(self, name: str) -> None:
        if getattr(self, name) is None:
            setattr(self, name, time.monotonic() - self.started)

    def as_dict(self) -> dict[str, float | None]:
        names = ("llm_first_token", "first_clause", "tts_first_audio")
        return {n: (round(v * 1000, 1) if (v := getattr(self, n)) is not None else None) for n in names}


@dataclass(frozen=True)
class ReplyRequest:
    messages: Sequence[ChatMessage]
    voice: str
    speed: float = 1.0
    max_tokens: int | None = None
    audio: bool = True
    tools: Sequence[dict[str, Any]] = ()  # chat-completions tools
    tool_choice: str = "auto"
    # Told each piece of a tool call as it comes, then None once the LLM is done. Called on the
    # event loop, from the task reading the LLM.
    on_tool_call: Callable[[ToolCallDelta | None], None] | None = None
    timed: bool = False  # audio chunks carry their word and viseme timings (engines that time words)
    # How long the listener can go on hearing the reply's audio made so far (its playout): a
    # later clause is cut short rather than let it run dry (pipeline.speak). None: not paced.
    audio_ahead_s: Callable[[], float] | None = None
    # The reply's words as given (the idle timeout's realtime.idle_message): spoken without asking the LLM.
    script: str | None = None


_ONE_MS_SILENCE = np.zeros(24, dtype=np.float32)  # 1 ms at 24 kHz: carries text known only once the audio ended


async def stream_reply(
    request: ReplyRequest,
    llm: ChatLLM,
    tts: SpeechSynthesizer,
    timings: ReplyTimings | None = None,
) -> AsyncIterator[ReplyEvent]:
    """Yield the reply as it is made. Raises the engines' errors (EngineError...).

    Audio comes from :func:`~cosyagent.pipeline.speak.speak`, which reads the LLM's deltas
    while it synthesizes: the LLM keeps generating while earlier clauses are spoken.
    """
    timings = timings or ReplyTimings()
    # Until the first clause, jobs needed later yield the cores to the LLM (engines.scheduling).
    first_clause_came = cpu_scheduler().waiting_on_llm(job_deadline())
    events = _reply_events(request, llm, tts, timings, first_clause_came)
    try:
        async with aclosing(events):  # type: ignore[type-var]  # an async generator
            async for event in events:
                yield event
    finally:
        first_clause_came()


async def _reply_events(
    request: ReplyRequest,
    llm: ChatLLM,
    tts: SpeechSynthesizer,
    timings: ReplyTimings,
    first_clause_came: Callable[[], None],
) -> AsyncIterator[ReplyEvent]:
    finish = _LLMFinish()
    if not request.audio:
        text_only = _script(request.script) or until_it_repeats(_llm_text(request, llm, timings, finish))
        async with aclosing(text_only) as deltas:  # type: ignore[type-var]
            async for delta in deltas:
                first_clause_came()
                yield TextDelta(delta)
        if reason := _INCOMPLETE.get(finish.reason):
            yield ReplyIncomplete(reason)
        return
    text = _script(request.script) or _speakable_llm_text(request, llm, tts.info.languages, timings, finish)

    said: list[str] = []

    async def kept(deltas: AsyncIterator[str]) -> AsyncIterator[str]:
        async with aclosing(deltas):  # type: ignore[type-var]  # an async generator
            async for delta in deltas:
                said.append(delta)
                yield delta

    def clause_ready(_clause: str) -> None:
        timings.mark("first_clause")
        first_clause_came()

    spoken = speak(
        tts,
        kept(text),
        voice=request.voice,
        speed=request.speed,
        on_clause=clause_ready,
        timed=request.timed,
        audio_ahead_s=request.audio_ahead_s,
    )
    async with aclosing(spoken):  # type: ignore[type-var]  # speak is an async generator
        async for chunk in spoken:
            timings.mark("tts_first_audio")
            yield AudioChunk(chunk.samples if chunk.samples.size else _ONE_MS_SILENCE, chunk.text, chunk.timings)
    yield SpokenText("".join(said))
    if reason := _INCOMPLETE.get(finish.reason):
        yield ReplyIncomplete(reason)


def _speakable_llm_text(
    request: ReplyRequest, llm: ChatLLM, languages: Sequence[str], timings: ReplyTimings, finish: _LLMFinish
) -> AsyncIterator[str]:
    """The LLM's text for a voice speaking ``languages``: asked in that language, asked again if it
    opens in Chinese the voice cannot speak (pipeline.voice_language), cut where it loops."""
    request = replace(request, messages=llm_request(request.messages, languages, audio=True).messages)
    text = _llm_text(request, llm, timings, finish)
    if speaks_no_chinese(languages) and not request.tools:  # (a retry would repeat tool calls already told)
        again = replace(request, messages=firmer(request.messages, languages))
        text = speakable_opening(text, lambda: _llm_text(again, llm, timings, finish))
    return until_it_repeats(text)


def _script(words: str | None) -> AsyncIterator[str] | None:
    """A reply's words as given, as the LLM's text would come; None: the LLM writes the reply."""
    if words is None:
        return None

    async def given() -> AsyncIterator[str]:
        yield words

    return given()


async def _llm_text(
    request: ReplyRequest, llm: ChatLLM, timings: ReplyTimings, finish: _LLMFinish
) -> AsyncIterator[str]:
    """The LLM's text; with tools, each call's pieces go to ``on_tool_call`` (then None)."""
    tell = request.on_tool_call or (lambda _piece: None)
    finish.reason = None  # (a retry's stream speaks for the reply, not the one it replaced)
    events = llm.stream_chat_events(
        request.messages, tools=request.tools, tool_choice=request.tool_choice, max_tokens=request.max_tokens
    )
    try:
        async for event in events:
            if isinstance(event, ChatFinished):
                finish.reason = event.reason
                continue
            timings.mark("llm_first_token")
            if isinstance(event, str):
                yield event
            else:
                tell(event)
        if request.tools:
            tell(None)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
