"""One assistant reply: LLM tokens -> clauses -> synthesized audio, as one async stream.

The LLM keeps generating in a task of its own while earlier clauses are synthesized.
Closing the stream (or cancelling its consumer) cancels that task, which closes the
LLM's HTTP stream, and fires the synthesizer's cancel token, so both really stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from cosyagent.engines.base import AudioF32, CancelToken, ChatLLM, ChatMessage, SpeechSynthesizer
from cosyagent.engines.streaming import TextStreamSynthesizer, streams_text
from cosyagent.pipeline.clauses import ClauseSplitter

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


ReplyEvent = TextDelta | AudioChunk


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


_DONE = object()


async def stream_reply(
    request: ReplyRequest,
    llm: ChatLLM,
    tts: SpeechSynthesizer,
    timings: ReplyTimings | None = None,
) -> AsyncIterator[ReplyEvent]:
    """Yield the reply as it is made. Raises the engines' errors (EngineError...)."""
    timings = timings or ReplyTimings()
    if not request.audio:
        async for delta in _llm_text(request, llm, timings):
            yield TextDelta(delta)
        return
    if streams_text(tts):  # bi-streaming (CosyVoice3): the LLM's deltas go straight into synthesis
        async for event in _bistream_reply(request, llm, tts, timings):  # type: ignore[arg-type]
            yield event
        return
    clauses: asyncio.Queue[object] = asyncio.Queue()
    producer = asyncio.create_task(_produce_clauses(request, llm, timings, clauses), name="reply-llm")
    cancel = CancelToken()
    try:
        while (item := await clauses.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, str)
            first_chunk = True
            async for samples in tts.synthesize(item, voice=request.voice, speed=request.speed, cancel=cancel):
                timings.mark("tts_first_audio")
                yield AudioChunk(samples, item if first_chunk else None)
                first_chunk = False
    finally:
        cancel.cancel()
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


async def _llm_text(request: ReplyRequest, llm: ChatLLM, timings: ReplyTimings) -> AsyncIterator[str]:
    stream = llm.stream_chat(request.messages, max_tokens=request.max_tokens)
    try:
        async for delta in stream:
            timings.mark("llm_first_token")
            yield delta
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def _produce_clauses(
    request: ReplyRequest, llm: ChatLLM, timings: ReplyTimings, out: asyncio.Queue[object]
) -> None:
    splitter = ClauseSplitter()
    try:
        async for delta in _llm_text(request, llm, timings):
            for clause in splitter.push(delta):
                timings.mark("first_clause")
                out.put_nowait(clause)
        for clause in splitter.flush():
            timings.mark("first_clause")
            out.put_nowait(clause)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  (handed to the consumer, which re-raises it in its own task)
        out.put_nowait(exc)
    out.put_nowait(_DONE)


async def _bistream_reply(
    request: ReplyRequest, llm: ChatLLM, tts: TextStreamSynthesizer, timings: ReplyTimings
) -> AsyncIterator[ReplyEvent]:
    """Feed LLM deltas to the synthesizer as they come; each audio chunk carries the clauses completed so far."""
    splitter = ClauseSplitter()
    completed: list[str] = []

    async def text() -> AsyncIterator[str]:
        async for delta in _llm_text(request, llm, timings):
            for clause in splitter.push(delta):
                timings.mark("first_clause")
                completed.append(clause)
            yield delta
        for clause in splitter.flush():
            timings.mark("first_clause")
            completed.append(clause)

    def take() -> str | None:
        if not completed:
            return None
        joined = " ".join(completed)
        completed.clear()
        return joined

    cancel = CancelToken()
    stream = tts.synthesize_stream(text(), voice=request.voice, speed=request.speed, cancel=cancel)
    try:
        async for samples in stream:
            timings.mark("tts_first_audio")
            yield AudioChunk(samples, take())
        if completed:  # text spoken in the last chunk, known only once the stream ended: 1 ms of silence carries it
            yield AudioChunk(np.zeros(24, dtype=np.float32), take())
    finally:
        cancel.cancel()
        await stream.aclose()  # type: ignore[attr-defined]
