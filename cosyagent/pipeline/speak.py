"""One way to speak: text (whole, or a stream of deltas) + voice + speed in, audio chunks out.

An engine that takes streaming text (``info.streams_text``: CosyVoice3) gets the text as it
comes and starts speaking before a sentence is complete. Any other engine gets it clause by
clause, the first clause short (:mod:`cosyagent.pipeline.clauses`), while the rest of the
text is still being produced; a later clause is cut short rather than let a paced reply's
audio run dry (``audio_ahead_s``). So does a streaming-text engine when timings are asked for
(``timed``): CosyVoice3 estimates them per clause, from each clause's whole audio.
The first audio starts 10 ms before its voice: the silence a synthesizer puts before it is cut.
The agent's replies and ``/v1/audio/speech`` both speak here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np

from cosyagent.audio.pcm import leading_silence
from cosyagent.engines.base import AudioF32, CancelToken, SpeechSynthesizer
from cosyagent.engines.streaming import TextStreamSynthesizer
from cosyagent.engines.timings import TimedSynthesizer, can_time_words
from cosyagent.pipeline.clauses import ClauseSplitter
from cosyagent.pipeline.timestamps import SpeechTimings

logger = logging.getLogger(__name__)

# A later clause is cut at the words already written once every clause before it is synthesized
# and the listener has less than this left to hear: about what the synthesizer needs for a few
# words when four sessions share 2 cores. Above it, the sentence is waited for (docs/benchmarks.md).
HURRY_AHEAD_S = 0.4
# A synthesizer starts each clause with a little silence (Piper: 10-85 ms below -40 dBFS). The
# first one is dead air the listener waits through: a speech starts this long before its voice.
KEEP_LEADING_SILENCE_MS = 10.0


@dataclass(frozen=True)
class SpokenChunk:
    """Synthesized audio and the text it makes known: the clause it starts (clause by clause),
    or the clauses completed since the last chunk (streaming text). A last chunk may hold
    no samples: it carries text completed only once the synthesis had ended."""

    samples: AudioF32
    text: str | None
    timings: SpeechTimings | None = None  # asked for (timed=True) and the engine times words


def clauses_of(text: str) -> list[str]:
    """``text`` as the clauses it is spoken in by an engine that does not take streaming text."""
    splitter = ClauseSplitter()
    return splitter.push(text + " ") + splitter.flush()


async def speak(
    tts: SpeechSynthesizer,
    text: str | AsyncIterator[str],
    *,
    voice: str,
    speed: float = 1.0,
    cancel: CancelToken | None = None,
    on_clause: Callable[[str], None] | None = None,
    timed: bool = False,
    audio_ahead_s: Callable[[], float] | None = None,
) -> AsyncIterator[SpokenChunk]:
    """Yield the speech of ``text`` as it is made; ``on_clause`` is told of each completed clause.
    ``audio_ahead_s`` says how long the listener can go on hearing what was yielded (a paced
    reply); without it clauses are cut by the text alone.

    Raises the engines' errors (EngineError...). Cancel-safe: closing the stream, or cancelling
    its consumer, fires ``cancel`` and stops reading ``text``.
    """
    cancel = cancel or CancelToken()
    deltas = _deltas(text) if isinstance(text, str) else text
    # Timed speech goes clause by clause even to a streaming-text engine: its times are per clause.
    streams = tts.info.streams_text and not (timed and can_time_words(tts))
    streaming = tts if streams and isinstance(tts, TextStreamSynthesizer) else None
    chunks = (
        _streaming_text(streaming, deltas, voice, speed, cancel, on_clause)
        if streaming is not None
        else _clause_by_clause(tts, deltas, voice, speed, cancel, on_clause, timed, audio_ahead_s)
    )
    voiced = False
    try:
        async for chunk in chunks:
            if not voiced and chunk.samples.size:
                voiced = True
                chunk = _voice_first(chunk, tts.sample_rate)
            yield chunk
    finally:
        cancel.cancel()  # first: the engine stops within one chunk while the rest is closed
        await chunks.aclose()


def _voice_first(chunk: SpokenChunk, sample_rate: int) -> SpokenChunk:
    """The speech's first audio without its leading silence, but for KEEP_LEADING_SILENCE_MS
    (its timings moved as much sooner); a chunk that is silence throughout is left as it is."""
    silent = leading_silence(chunk.samples, sample_rate)
    cut = silent - round(sample_rate * KEEP_LEADING_SILENCE_MS / 1000)
    if silent >= chunk.samples.size or cut <= 0:
        return chunk
    timings = None if chunk.timings is None else chunk.timings.sooner(cut * 1000 / sample_rate)
    return SpokenChunk(chunk.samples[cut:], chunk.text, timings)


async def _deltas(text: str) -> AsyncIterator[str]:
    yield text


_DONE = object()


class _Handover:
    """The clauses the text's reader hands to the synthesis, and whether the listener is about
    to run dry: every clause handed over is synthesized and a paced reply has under
    :data:`HURRY_AHEAD_S` left to hear."""

    def __init__(self, on_clause: Callable[[str], None] | None, audio_ahead_s: Callable[[], float] | None) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()  # clauses, then an exception or _DONE
        self._on_clause = on_clause
        self._audio_ahead_s = audio_ahead_s
        self._unsynthesized = 0

    def put(self, clause: str) -> None:
        _told(self._on_clause, clause)
        self._unsynthesized += 1
        self.queue.put_nowait(clause)

    def synthesized(self) -> None:
        self._unsynthesized -= 1

    def running_dry(self) -> bool:
        ahead = self._audio_ahead_s
        return ahead is not None and self._unsynthesized == 0 and ahead() < HURRY_AHEAD_S


async def _clause_by_clause(
    tts: SpeechSynthesizer,
    text: AsyncIterator[str],
    voice: str,
    speed: float,
    cancel: CancelToken,
    on_clause: Callable[[str], None] | None,
    timed: bool,
    audio_ahead_s: Callable[[], float] | None,
) -> AsyncGenerator[SpokenChunk, None]:
    handover = _Handover(on_clause, audio_ahead_s)
    producer = asyncio.create_task(_split(text, handover), name="speak-clauses")
    try:
        while (item := await handover.queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, str)
            clause: str | None = item
            stream = _synthesized(tts, item, voice, speed, cancel, timed)
            async with aclosing(stream):
                async for chunk in stream:
                    yield SpokenChunk(chunk.samples, clause, chunk.timings)
                    clause = None
            handover.synthesized()
    finally:
        producer.cancel()
        await asyncio.wait({producer})  # the producer's own cancellation is not ours to raise


async def _synthesized(
    tts: SpeechSynthesizer, text: str, voice: str, speed: float, cancel: CancelToken, timed: bool
) -> AsyncGenerator[SpokenChunk, None]:
    """One clause's chunks, timed when asked and the engine can."""
    if timed and can_time_words(tts):
        assert isinstance(tts, TimedSynthesizer)
        timed_stream = tts.synthesize_timed(text, voice=voice, speed=speed, cancel=cancel)
        async with aclosing(timed_stream):  # type: ignore[type-var]  # the engines' streams are async generators
            async for made in timed_stream:
                yield SpokenChunk(made.audio, None, SpeechTimings.of(made))
        return
    stream = tts.synthesize(text, voice=voice, speed=speed, cancel=cancel)
    async with aclosing(stream):  # type: ignore[type-var]
        async for samples in stream:
            yield SpokenChunk(samples, None)


async def _split(text: AsyncIterator[str], handover: _Handover) -> None:
    """Runs as a task, so that the text keeps coming while earlier clauses are synthesized.
    Looked at with each delta: when the audio is about to run dry, the words there are go."""
    splitter = ClauseSplitter()
    try:
        async for delta in text:
            clauses = splitter.push(delta)
            if not clauses and handover.running_dry() and (hurried := splitter.hurry()) is not None:
                clauses = [hurried]
                logger.debug("the audio is running dry: %r spoken before its sentence ends", hurried)
            for clause in clauses:
                handover.put(clause)
        for clause in splitter.flush():
            handover.put(clause)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  (handed to the consumer, which re-raises it in its own task)
        handover.queue.put_nowait(exc)
    handover.queue.put_nowait(_DONE)


async def _streaming_text(
    tts: TextStreamSynthesizer,
    text: AsyncIterator[str],
    voice: str,
    speed: float,
    cancel: CancelToken,
    on_clause: Callable[[str], None] | None,
) -> AsyncGenerator[SpokenChunk, None]:
    """The deltas go straight into synthesis; clauses are cut only to say which text each chunk completes."""
    splitter = ClauseSplitter()
    completed: list[str] = []

    async def fed() -> AsyncIterator[str]:
        async for delta in text:
            completed.extend(_told(on_clause, clause) for clause in splitter.push(delta))
            yield delta
        completed.extend(_told(on_clause, clause) for clause in splitter.flush())

    def take() -> str | None:
        joined = " ".join(completed) if completed else None
        completed.clear()
        return joined

    stream = tts.synthesize_stream(fed(), voice=voice, speed=speed, cancel=cancel)
    async with aclosing(stream):  # type: ignore[type-var]
        async for samples in stream:
            yield SpokenChunk(samples, take())
    if completed:
        yield SpokenChunk(np.zeros(0, dtype=np.float32), take())


def _told(on_clause: Callable[[str], None] | None, clause: str) -> str:
    if on_clause is not None:
        on_clause(clause)
    return clause
