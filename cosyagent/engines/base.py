"""The seams every model engine implements.

Engines are framework-free: they import nothing else of cosyagent, know nothing of
sessions or sockets, and are loaded once per process (``load()``), then shared by
every session. Blocking inference runs on the engine's own single-thread executor
(one queue per engine, served in FIFO order), never on the event loop, and checks a
:class:`CancelToken` between chunks so that a barge-in really stops the work.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from cosyagent.audio.pcm import AudioF32 as AudioF32  # re-exported: the engines' sample type

T = TypeVar("T")


class EngineError(Exception):
    """An engine failed for a reason the caller can report (bad input, missing model...)."""


class EngineUnavailableError(EngineError):
    """The engine cannot serve at all right now (model missing, endpoint down)."""


class SynthesisCancelled(Exception):
    """Raised inside a worker thread when its :class:`CancelToken` fires."""


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
            raise SynthesisCancelled()

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
    """One worker thread per engine: calls queue up in order, the loop never blocks.

    Cancel-safety: cancelling the awaiting task does not interrupt a call already
    running in the thread (Python cannot); pair it with a :class:`CancelToken` that
    the call checks between chunks. A call still queued when its token fires is
    skipped without running.
    """

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
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
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, guarded)
        finally:
            self._queued -= 1

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


@runtime_checkable
class VADStream(Protocol):
    """Per-session voice activity state over fixed-size frames at ``sample_rate``."""

    def speech_probability(self, frame: AudioF32) -> float:
        """Probability of speech in one frame of exactly ``frame_samples`` samples."""
        ...

    def reset(self) -> None: ...


@runtime_checkable
class TurnEndPredictor(Protocol):
    """Judges from the audio alone whether an utterance is a finished turn (Smart Turn)."""

    async def probability(self, audio: AudioF32, cancel: CancelToken | None = None) -> float:
        """Probability (0-1) that 16 kHz ``audio`` ends a complete turn."""
        ...


@runtime_checkable
class VoiceActivityDetector(Protocol):
    sample_rate: int
    frame_samples: int

    def load(self) -> None: ...

    def new_stream(self) -> VADStream:
        """A fresh per-session state sharing the loaded model."""
        ...


@runtime_checkable
class SpeechRecognizer(Protocol):
    name: str
    sample_rate: int
    languages: Sequence[str]

    def load(self) -> None:
        """Load weights and run one warm-up inference."""
        ...

    async def transcribe(
        self,
        audio: AudioF32,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Transcribe mono float32 audio at ``sample_rate``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SpeechSynthesizer(Protocol):
    name: str
    sample_rate: int

    def load(self) -> None:
        """Load weights and run one warm-up synthesis."""
        ...

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

    def close(self) -> None: ...


ChatMessage = dict[str, str]
"""``{"role": "system" | "user" | "assistant", "content": str}``."""


@runtime_checkable
class ChatLLM(Protocol):
    model: str

    async def check(self) -> None:
        """Raise :class:`EngineUnavailableError` if the endpoint cannot be reached."""
        ...

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas. Closing the iterator aborts the HTTP stream."""
        ...

    async def aclose(self) -> None: ...
