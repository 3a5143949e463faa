"""The TTS engine as sessions and the speech API see it: it speaks any voice of the library."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import aclosing

from cosyagent.engines.base import AudioF32, CancelToken, EngineError, EngineInfo, SpeechSynthesizer
from cosyagent.engines.streaming import TextStreamSynthesizer
from cosyagent.engines.timings import TimedAudio, TimedSynthesizer
from cosyagent.voices.library import VoiceLibrary, VoiceLibraryError


class VoiceUnavailableError(EngineError):
    """The voice asked for cannot be spoken; ``reason`` is the library's refusal (its code and param)."""

    def __init__(self, reason: VoiceLibraryError) -> None:
        super().__init__(str(reason))
        self.reason = reason


class LibrarySynthesizer:
    """The TTS engine as sessions see it: speaks any built-in voice, user voice id or user voice name.

    The same contract as the engine (:class:`SpeechSynthesizer`, and ``synthesize_stream``
    when the engine takes streaming text); the engine itself stays owned (loaded, closed)
    by the runtime.
    """

    def __init__(self, tts: SpeechSynthesizer, library: VoiceLibrary) -> None:
        self._tts = tts
        self._library = library
        self.name = tts.name
        self.sample_rate = tts.sample_rate
        self._style: dict[str, str] = {}  # the engine's own keyword: {"instruct": ...}

    def with_instructions(self, instructions: str | None) -> LibrarySynthesizer:
        """The same synthesizer speaking in the style ``instructions`` describe, where the engine
        follows instructions (``info.follows_instructions``); unchanged where it cannot."""
        styled = copy.copy(self)
        text = (instructions or "").strip()
        styled._style = {"instruct": text} if text and self._tts.info.follows_instructions else {}
        return styled

    @property
    def info(self) -> EngineInfo:
        return self._tts.info

    @property
    def loaded(self) -> bool:
        return self._tts.loaded

    @property
    def queue_depth(self) -> int:
        return self._tts.queue_depth

    def load(self) -> None:
        self._tts.load()

    def voices(self) -> list[str]:
        return [v.id for v in self._library.list() if v.usable]

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        stream = self._tts.synthesize(text, voice=self._engine_voice(voice), speed=speed, cancel=cancel, **self._style)
        async with aclosing(stream):  # type: ignore[type-var]  # the engines' streams are async generators
            async for chunk in stream:
                yield chunk

    async def synthesize_timed(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[TimedAudio]:
        """Audio with its word and phoneme times (engines with ``info.times_words`` only)."""
        if not isinstance(self._tts, TimedSynthesizer) or not self._tts.info.times_words:
            raise EngineError(f"the {self.name} engine cannot time words")
        stream = self._tts.synthesize_timed(
            text, voice=self._engine_voice(voice), speed=speed, cancel=cancel, **self._style
        )
        async with aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                yield chunk

    async def synthesize_stream(
        self, text: AsyncIterator[str], *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        """Streaming text (engines with ``info.streams_text`` only): text deltas in, audio out as it is made."""
        if not isinstance(self._tts, TextStreamSynthesizer):
            raise EngineError(f"the {self.name} engine does not take streaming text")
        stream = self._tts.synthesize_stream(
            text, voice=self._engine_voice(voice), speed=speed, cancel=cancel, **self._style
        )
        async with aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                yield chunk

    def _engine_voice(self, voice: str) -> str:
        try:
            return self._library.resolve(voice)
        except VoiceLibraryError as exc:
            raise VoiceUnavailableError(exc) from exc

    def close(self) -> None:
        """Nothing of its own: the runtime closes the engine."""
