"""Reply audio on its way out: the sink a transport plays it on, and the pacer that feeds it.

:class:`AudioSink` is what every transport implements (after livekit's ``AudioOutput``):
it takes a response's audio, finishes it, clears it on barge-in, holds and resumes it,
and says how much of it has been played. A :class:`MediaAudioSink` plays on a clock of its
own (a media track), and :class:`Playout` follows its playback; for any other sink the
audio leaves as events the client plays, and :class:`Playout` paces them to real time.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

from cosyagent.engines.base import AudioF32

# Synthesis runs at most this far ahead of what has been sent. Beyond it a reply's later
# clauses wait: on 2 cores, synthesizing a whole reply at once starves the LLM (niced, and
# serving one request at a time) and every other session's first clause.
SYNTHESIS_AHEAD_MS = 3000.0


class AudioSink(ABC):
    """Where a session's reply audio is played. Called from the session's event loop, in
    the order the session decided, interleaved with the events it sends."""

    @abstractmethod
    def finish(self, response_id: str) -> None:
        """All of ``response_id``'s audio has been handed out."""

    @abstractmethod
    def clear(self) -> None:
        """Barge-in, or the response failed: drop what is queued and any hold, at once."""

    @abstractmethod
    def hold(self) -> None:
        """Pause playback (keep what is queued) until :meth:`resume`."""

    @abstractmethod
    def resume(self) -> None: ...


class MediaAudioSink(AudioSink):
    """A sink that plays on a media track of its own, at its own clock: the session pushes
    the synthesizer's samples (resampled once, by the sink) and follows its playback."""

    @abstractmethod
    def push(self, response_id: str, samples: AudioF32, sample_rate: int) -> None:
        """Queue the next piece of ``response_id``'s audio."""

    @abstractmethod
    def played_ms(self, response_id: str) -> float:
        """How much of ``response_id``'s audio has been played so far."""


class PlayoutSource(Protocol):
    """The response's planned audio, as the sans-I/O core keeps it."""

    def pending_audio_ms(self, response_id: str) -> float: ...

    def sent_audio_ms(self, response_id: str) -> float: ...

    def audio_on_hold(self) -> bool: ...


class Playout:
    """Releases one response's planned audio no further ahead of its playback than the lead:
    a media sink's own playback, else real time. Nothing is released while it is held."""

    def __init__(
        self,
        source: PlayoutSource,
        sink: AudioSink,
        response_id: str,
        lead_ms: float,
        release: Callable[[], None],
    ) -> None:
        self._source = source
        self._sink = sink
        self._response_id = response_id
        self._lead_ms = lead_ms
        self._release = release  # pops the next planned piece and carries it out
        self._clock = _WallClock()
        self._ready = asyncio.Event()
        self._sent = asyncio.Event()
        self._finished = False

    def wake(self) -> None:
        self._ready.set()

    async def until_unsent_at_most(self, limit_ms: float) -> None:
        """Return once at most ``limit_ms`` of the response's planned audio is still unsent."""
        while self._source.pending_audio_ms(self._response_id) > limit_ms:
            self._sent.clear()
            await self._sent.wait()

    def audio_ahead_ms(self) -> float:
        """How long the listener can go on hearing this response from what is already made:
        audio planned but unsent, plus audio sent and not yet played (all of it while held)."""
        pending = self._source.pending_audio_ms(self._response_id)
        sent = self._source.sent_audio_ms(self._response_id)
        if sent <= 0 or self._source.audio_on_hold():
            return pending + sent  # the clock starts with the first release and stands while held
        return pending + max(0.0, sent - self._played_ms())

    def finish(self) -> None:
        """No more audio will be planned: send what is left, then return."""
        self._finished = True
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._source.pending_audio_ms(self._response_id) > 0:
                if self._source.audio_on_hold():
                    self._clock.hold()
                    break  # woken again after the next client event
                ahead_ms = self._source.sent_audio_ms(self._response_id) - self._played_ms()
                if ahead_ms > self._lead_ms:
                    await asyncio.sleep((ahead_ms - self._lead_ms) / 1000.0)
                    continue  # re-check the hold after sleeping
                self._release()
                self._sent.set()
            if self._finished and self._source.pending_audio_ms(self._response_id) == 0:
                return

    def _played_ms(self) -> float:
        if isinstance(self._sink, MediaAudioSink):
            return self._sink.played_ms(self._response_id)
        return self._clock.played_ms()


class _WallClock:
    """Real time since the first release, less the time held."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._held_since: float | None = None

    def hold(self) -> None:
        self._held_since = self._held_since or time.monotonic()

    def played_ms(self) -> float:
        now = time.monotonic()
        if self._held_since is not None and self._start is not None:
            self._start += now - self._held_since  # the pause is not time played
        self._held_since = None
        self._start = self._start or now
        return (now - self._start) * 1000.0
