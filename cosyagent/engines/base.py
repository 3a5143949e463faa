"""The seams every model engine implements.

Engines are framework-free: they import nothing else of cosyagent, know nothing of
sessions or sockets, and are loaded once per process (``load()``), then shared by
every session. Blocking inference runs on the engine's own single-thread executor
(served in deadline order, see :mod:`cosyagent.engines.scheduling`), never on the event loop, and checks a
:class:`CancelToken` between chunks so that a barge-in really stops the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from cosyagent.audio.pcm import AudioF32 as AudioF32  # re-exported: the engines' sample type
from cosyagent.engines.native_memory import trim_native_heap
from cosyagent.engines.scheduling import DeadlineScheduler, cpu_scheduler, gives_way, held_lane, job_deadline

T = TypeVar("T")


class EngineError(Exception):
    """An engine failed for a reason the caller can report (bad input, missing model...)."""


class EngineUnavailableError(EngineError):
    """The engine cannot serve at all right now (model missing, endpoint down)."""


class UnspeakableTextError(EngineError):
    """The text is in a language or script the voice cannot speak (it would come out as noise):
    the caller's text, not the engine, is at fault."""

    code = "unsupported_language"


class UnsupportedLanguageError(EngineError):
    """The audio is speech in a language the recognizer cannot transcribe (it would invent text)."""

    code = "unsupported_language"

    def __init__(self, message: str, language: str) -> None:
        super().__init__(message)
        self.language = language


class EngineCancelled(Exception):
    """Raised inside any engine's worker (ASR, TTS, turn model) when its :class:`CancelToken` fires."""


class CancelToken:
    """A thread-safe flag that the event loop sets and worker threads poll between chunks.

    Engines that can abort *inside* a chunk (an ONNX run) register a callback with
    :meth:`on_cancel`; it runs in the cancelling thread.
    """

    __slots__ = ("_callbacks", "_event", "_lock")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise EngineCancelled()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once when cancelled (at once if already). Returns an unregister function."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._discard(callback)
        callback()
        return lambda: None

    def _discard(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


class EngineExecutor:
    """One worker thread per engine, its calls run in deadline order, the loop never blocks.

    Each call first waits for a lane of the process-wide :class:`DeadlineScheduler` (the
    earliest deadline, :func:`~cosyagent.engines.scheduling.job_deadline`, goes first across
    all engines), then runs on this engine's thread; the lane is freed when the call ends.

    Cancel-safety: cancelling the awaiting task does not interrupt a call already
    running in the thread (Python cannot); pair it with a :class:`CancelToken` that
    the call checks between chunks. A call still waiting when its token fires is
    skipped without running.
    """

    def __init__(self, name: str, scheduler: DeadlineScheduler | None = None) -> None:
        """``name``: the engine's role (asr, tts, turn), in thread names and metrics."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        self._scheduler = scheduler or cpu_scheduler()
        self._name = name
        self._queued = 0

    @property
    def queue_depth(self) -> int:
        """Calls submitted and not yet finished (running one included)."""
        return self._queued

    async def run(self, fn: Callable[[], T], cancel: CancelToken | None = None) -> T:
        def guarded() -> T:
            if cancel is not None:
                cancel.raise_if_cancelled()
            return fn()

        self._queued += 1
        submitted, deadline = time.monotonic(), job_deadline()
        held = held_lane(self._scheduler)
        try:
            if held is not None:  # the caller's lane (holding_lane): no wait, and the caller frees it
                self._scheduler.started(self._name, submitted, deadline)
                job = self._pool.submit(guarded)
                held.last_job = job
                return await asyncio.wrap_future(job)
            await self._scheduler.acquire(deadline)
            self._scheduler.started(self._name, submitted, deadline)
            ended = self._scheduler.running_gives_way(cancel.cancel) if gives_way() and cancel is not None else None
            try:
                job = self._pool.submit(guarded)
            except BaseException:
                self._after_job(ended)
                raise
            job.add_done_callback(lambda _: self._after_job(ended))  # in the worker, when the call ends
            return await asyncio.wrap_future(job)
        finally:
            self._queued -= 1

    def _after_job(self, ended: Callable[[], None] | None) -> None:
        """Free the lane (first telling the scheduler that a job that gave way has ended); if that
        leaves every engine idle, trim the heap behind the job (no caller waits)."""
        if ended is not None:
            ended()
        if self._scheduler.release():
            with contextlib.suppress(RuntimeError):  # shut down meanwhile: nothing more runs here
                self._pool.submit(trim_native_heap)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class TranscriptSegment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    segments: Sequence[TranscriptSegment] = field(default_factory=tuple)
    language_probability: float | None = None  # how sure a language check was of ``language`` (None: unchecked)
    # The recognizer's own token ids for ``text`` (empty if it keeps none): passed back as the
    # ``draft`` of a longer take of the same audio, they let it check words instead of decoding them.
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class EngineInfo:
    """What an engine is and can do, for the layers above it: they read this, never the class.

    ``name`` is the engine (``asr.engine`` in config terms), ``model`` the model id that
    ``/v1/models`` and session defaults report. Fields that do not apply to a kind of engine
    keep their defaults (a VAD has no speed range).
    """

    name: str
    model: str
    sample_rate: int | None = None
    # Base language codes ("en", "zh"...): ASR transcribes them, TTS speaks them (empty: not stated)
    languages: tuple[str, ...] = ()
    speed_range: tuple[float, float] | None = None  # TTS: the speeds synthesize() accepts
    streams_text: bool = False  # TTS: takes the text as a stream (synthesize_stream)
    can_clone: bool = False  # TTS: speaks a voice derived from a clip
    times_words: bool = False  # TTS: synthesize_timed() gives word and phoneme times from the model's durations
    follows_instructions: bool = False  # TTS: synthesize*(instruct=...) speaks in the style an instruction describes
    checks_drafts: bool = False  # ASR: transcribe(draft=...) is faster with an earlier take of the audio's start

    def check_speed(self, speed: float) -> None:
        """EngineError unless ``speed`` is in :attr:`speed_range`."""
        if self.speed_range is not None and not self.speed_range[0] <= speed <= self.speed_range[1]:
            low, high = self.speed_range
            raise EngineError(f"speed must be between {low} and {high}, got {speed}")


@runtime_checkable
class VADStream(Protocol):
    """Per-session voice activity state over fixed-size frames at ``sample_rate``."""

    def speech_probability(self, frame: AudioF32) -> float:
        """Probability of speech in one frame of exactly ``frame_samples`` samples."""
        ...

    def reset(self) -> None: ...


class Engine(Protocol):
    """What every engine has: a description, an explicit load, and a close."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None:
        """Load weights and run one warm-up inference (blocking; once per process)."""
        ...

    def close(self) -> None: ...


class QueuedEngine(Engine, Protocol):
    """An engine whose calls queue on its own worker (see :class:`EngineExecutor`)."""

    @property
    def queue_depth(self) -> int:
        """Calls waiting for or running on the engine's worker."""
        ...


@runtime_checkable
class OwnSlotsEngine(QueuedEngine, Protocol):
    """An engine that runs its jobs on slots of its own (CosyVoice on a GPU), not on the CPU
    scheduler's lanes: the server's count of work done for someone reads it too."""

    @property
    def foreground_jobs_started(self) -> int:
        """Jobs started since the process began, background ones (submitted under a deadline
        :data:`~cosyagent.engines.scheduling.BACKGROUND_AHEAD_S` or more ahead) aside."""
        ...


@runtime_checkable
class TurnEndPredictor(QueuedEngine, Protocol):
    """Judges from the audio alone whether an utterance is a finished turn (Smart Turn)."""

    async def probability(self, audio: AudioF32, cancel: CancelToken | None = None) -> float:
        """Probability (0-1) that 16 kHz ``audio`` ends a complete turn."""
        ...


@runtime_checkable
class VoiceActivityDetector(Engine, Protocol):
    sample_rate: int
    frame_samples: int

    def new_stream(self) -> VADStream:
        """A fresh per-session state sharing the loaded model."""
        ...


@runtime_checkable
class SpeechRecognizer(QueuedEngine, Protocol):
    name: str
    sample_rate: int

    async def transcribe(
        self,
        audio: AudioF32,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        draft: Transcript | None = None,
    ) -> Transcript:
        """Transcribe mono float32 audio at ``sample_rate``; EngineCancelled once ``cancel`` fires.
        ``draft``: an earlier transcript of this audio's beginning; an engine that
        ``checks_drafts`` verifies its tokens against this audio instead of decoding them one by one
        (the transcript must not depend on it), the others ignore it."""
        ...


@runtime_checkable
class SpeechSynthesizer(QueuedEngine, Protocol):
    name: str
    sample_rate: int

    def voices(self) -> Sequence[str]:
        """Names accepted by ``synthesize(voice=...)``."""
        ...

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
    ) -> AsyncIterator[AudioF32]:
        """Yield float32 chunks at ``sample_rate`` as they are made.

        Raises :class:`EngineError` for an unknown voice or unusable text. Stops
        within one chunk once ``cancel`` fires (or the iterator is closed).
        """
        ...


ChatMessage = dict[str, Any]
"""A chat-completions message: ``{"role": "system" | "user" | "assistant", "content": str}``; an
assistant message may carry ``tool_calls``, a ``{"role": "tool", "tool_call_id": ...}`` answers one."""


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call the LLM is making, as chat-completions streams them: the call at
    ``index`` gets its ``id`` and ``name`` in its first piece, its JSON ``arguments`` in pieces."""

    index: int
    arguments: str = ""
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ChatFinished:
    """The last event of a chat stream the LLM ended itself: its chat-completions ``finish_reason``
    (``stop``; ``length``: it reached ``max_tokens``; ``tool_calls``; ``content_filter``), None
    when the endpoint names none. A stream closed early, or broken off, has no such event."""

    reason: str | None


ChatEvent = str | ToolCallDelta | ChatFinished
"""What a chat stream yields: text deltas, pieces of tool calls, then :class:`ChatFinished`."""


@runtime_checkable
class ChatLLM(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def info(self) -> EngineInfo: ...

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas. Closing the iterator aborts the HTTP stream."""
        ...

    def stream_chat_events(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str = "auto",
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[ChatEvent]:
        """Yield text deltas and the pieces of any calls of ``tools`` (chat-completions tool
        objects; ``tool_choice``: auto, none or required), then why the LLM stopped
        (:class:`ChatFinished`). Closing the iterator aborts the stream."""
        ...

    async def aclose(self) -> None: ...
