"""The TTS engine as sessions and the speech API see it: it speaks any voice of the library."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from cosyagent.engines.base import AudioF32, CancelToken, EngineError, SpeechSynthesizer
from cosyagent.engines.streaming import TextStreamSynthesizer
from cosyagent.voices.library import VoiceLibrary, VoiceLibraryError


class LibrarySynthesizer:
    """The TTS engine as sessions see it: speaks any built-in voice, user voice id or user voice name.

    Same shape as the engine (:class:`SpeechSynthesizer`); the engine itself stays owned
    (loaded, closed) by the runtime.
    """

    def __init__(self, tts: SpeechSynthesizer, library: VoiceLibrary) -> None:
        self._tts = tts
        self._library = library
        self.name = tts.name
        self.sample_rate = tts.sample_rate
        self.streams_text = isinstance(tts, TextStreamSynthesizer)  # bi-streaming input (CosyVoice3)

    def load(self) -> None:
        self._tts.load()

    def voices(self) -> list[str]:
        return [v.id for v in self._library.list() if v.usable]

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        try:
            engine_voice = self._library.resolve(voice)
        except VoiceLibraryError as exc:
            raise EngineError(str(exc)) from exc
        stream = self._tts.synthesize(text, voice=engine_voice, speed=speed, cancel=cancel)
        async with aclosing(stream):  # type: ignore[type-var]  # the engines' streams are async generators
            async for chunk in stream:
                yield chunk

    async def synthesize_stream(
        self, text: AsyncIterator[str], *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        """Bi-streaming (engines with ``synthesize_stream`` only): text deltas in, audio out as it is made."""
        if not isinstance(self._tts, TextStreamSynthesizer):
            raise EngineError(f"the {self.name} engine does not take streaming text")
        try:
            engine_voice = self._library.resolve(voice)
        except VoiceLibraryError as exc:
            raise EngineError(str(exc)) from exc
        stream = self._tts.synthesize_stream(text, voice=engine_voice, speed=speed, cancel=cancel)
        async with aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                yield chunk

    def close(self) -> None:
        pass
