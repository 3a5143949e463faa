"""Speaker features: what a TTS engine derives from a voice definition, to speak with it later.

A user voice is either a clip of someone speaking (plus what they say) or a weighted blend
of the engine's own voices. An engine turns either into *speaker features*: named arrays
it can synthesize with (CosyVoice: a speaker embedding, prompt speech tokens and prompt
mel frames; Kokoro: one style array). Deriving them can be slow (a speaker encoder over a
clip), so the voice library computes them once per voice and caches them, in memory and
on disk, under the engine's :attr:`SpeakerFeatureEngine.feature_key`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cosyagent.engines.base import AudioF32, EngineError
from cosyagent.engines.kokoro_tts import KokoroTTS
from cosyagent.engines.piper_tts import PiperTTS

SpeakerFeatures = Mapping[str, npt.NDArray[Any]]


class CloningUnsupportedError(EngineError):
    """This engine cannot derive a voice from a clip."""


@runtime_checkable
class SpeakerFeatureEngine(Protocol):
    """The voice-management side of a TTS engine.

    ``feature_key`` names the model the features belong to: features cached under another
    key (another engine, another model version) are never fed to this one.
    """

    feature_key: str
    can_clone: bool

    def builtin_voices(self) -> Sequence[str]:
        """The engine's own voices (valid after the engine is loaded)."""
        ...

    def blend_features(self, weights: Mapping[str, float]) -> SpeakerFeatures:
        """Features of a weighted mix of built-in voices; EngineError for a bad mix."""
        ...

    def clip_features(self, audio: AudioF32, sample_rate: int, text: str) -> SpeakerFeatures:
        """Features of the speaker of ``audio`` saying ``text``; CloningUnsupportedError if it cannot. Blocking."""
        ...

    def register(self, voice: str, features: SpeakerFeatures) -> None:
        """Make ``voice`` speakable by the engine's ``synthesize(voice=...)``; EngineError for foreign features."""
        ...

    def unregister(self, voice: str) -> None: ...


class KokoroVoiceFeatures:
    """Kokoro's voices as speaker features: a voice is a style array, a blend is a weighted sum.

    Kokoro-82M has no speaker encoder, so it cannot clone a voice from a clip.
    """

    feature_key = "kokoro-82m-v1.0"
    can_clone = KokoroTTS.info.can_clone

    def __init__(self, tts: KokoroTTS) -> None:
        self._tts = tts
        self._registered: set[str] = set()

    def builtin_voices(self) -> list[str]:
        return [voice for voice in self._tts.voices() if voice not in self._registered]

    def blend_features(self, weights: Mapping[str, float]) -> SpeakerFeatures:
        unknown = sorted(set(weights) - set(self.builtin_voices()))
        if unknown:
            raise EngineError(f"cannot blend {unknown}: not built-in voices of this engine")
        return {"style": self._tts.blend_voice(weights)}

    def clip_features(self, audio: AudioF32, sample_rate: int, text: str) -> SpeakerFeatures:
        raise CloningUnsupportedError(
            "the kokoro engine cannot clone a voice from a clip; a cloning engine (CosyVoice) can"
        )

    def register(self, voice: str, features: SpeakerFeatures) -> None:
        style = features.get("style")
        if style is None:
            raise EngineError("Kokoro speaker features need a 'style' array")
        self._tts.add_voice(voice, np.asarray(style, dtype=np.float32))
        self._registered.add(voice)

    def unregister(self, voice: str) -> None:
        if voice in self._registered:
            self._tts.remove_voice(voice)
            self._registered.discard(voice)


class PiperVoiceFeatures:
    """Piper's one voice: nothing to blend with, no speaker encoder to clone with."""

    feature_key = PiperTTS.info.model
    can_clone = PiperTTS.info.can_clone

    def __init__(self, tts: PiperTTS) -> None:
        self._tts = tts

    def builtin_voices(self) -> list[str]:
        return list(self._tts.voices())

    def blend_features(self, weights: Mapping[str, float]) -> SpeakerFeatures:
        raise EngineError("the piper engine has one voice: there is nothing to blend")

    def clip_features(self, audio: AudioF32, sample_rate: int, text: str) -> SpeakerFeatures:
        raise CloningUnsupportedError(
            "the piper engine cannot clone a voice from a clip; a cloning engine (CosyVoice) can"
        )

    def register(self, voice: str, features: SpeakerFeatures) -> None:
        raise EngineError("the piper engine cannot speak user voices")

    def unregister(self, voice: str) -> None:
        """Nothing was registered."""
