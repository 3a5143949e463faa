"""CosyVoice3's side of the voice library: a clip voice is a cached zero-shot speaker.

Features are what CosyVoice's frontend extracts from a prompt clip (speaker embedding,
prompt speech tokens, prompt mel frames, prompt text tokens). The library derives them
once per voice, caches them on disk and registers them at startup, so no request ever
runs the speaker encoder or the speech tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping

from cosyagent.engines.base import AudioF32, EngineError
from cosyagent.engines.cosyvoice_tts import CosyVoiceTTS
from cosyagent.voices.features import SpeakerFeatures


class CosyVoiceVoiceFeatures:
    feature_key = "fun-cosyvoice3-0.5b-2512"
    can_clone = CosyVoiceTTS.info.can_clone

    def __init__(self, tts: CosyVoiceTTS) -> None:
        self._tts = tts
        self._registered: set[str] = set()

    def builtin_voices(self) -> list[str]:
        return [voice for voice in self._tts.voices() if voice not in self._registered]

    def blend_features(self, weights: Mapping[str, float]) -> SpeakerFeatures:
        raise EngineError("the cosyvoice engine cannot blend voices; create a voice from a clip instead")

    def clip_features(self, audio: AudioF32, sample_rate: int, text: str) -> SpeakerFeatures:
        return self._tts.extract_features(audio, sample_rate, text)

    def register(self, voice: str, features: SpeakerFeatures) -> None:
        self._tts.add_voice(voice, features)
        self._registered.add(voice)

    def unregister(self, voice: str) -> None:
        if voice in self._registered:
            self._tts.remove_voice(voice)
            self._registered.discard(voice)
