"""Silero VAD on real speech and digital silence."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from cosyagent.engines.base import AudioF32, VoiceActivityDetector
from cosyagent.engines.vad import SileroVAD


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    engine = SileroVAD()
    engine.load()
    return engine


def frames(audio: AudioF32, size: int = 512) -> Iterator[AudioF32]:
    for start in range(0, len(audio) - size + 1, size):
        yield audio[start : start + size]


@pytest.fixture(scope="module")
def speech(load_clip: Callable[[str], tuple[AudioF32, int]]) -> AudioF32:
    audio, rate = load_clip("en_dublin_q.wav")
    assert rate == 16_000
    return audio


def test_implements_protocol(vad: SileroVAD) -> None:
    assert isinstance(vad, VoiceActivityDetector)
    assert (vad.sample_rate, vad.frame_samples) == (16_000, 512)


def test_speech_clip_has_speech_frames(vad: SileroVAD, speech: AudioF32) -> None:
    stream = vad.new_stream()
    probs = [stream.speech_probability(f) for f in frames(speech)]
    assert len(probs) == len(speech) // 512
    assert max(probs) > 0.5
    assert sum(p > 0.5 for p in probs) >= 10  # ~0.3 s of the 2.8 s clip at least


def test_digital_silence_is_not_speech(vad: SileroVAD) -> None:
    stream = vad.new_stream()
    probs = [stream.speech_probability(f) for f in frames(np.zeros(16_000, dtype=np.float32))]
    assert len(probs) == 31
    assert max(probs) < 0.1


def test_streams_are_independent(vad: SileroVAD, speech: AudioF32) -> None:
    reference = vad.new_stream()
    expected = [reference.speech_probability(f) for f in frames(speech)]

    talking, quiet = vad.new_stream(), vad.new_stream()
    got, silent = [], []
    silence = np.zeros(512, dtype=np.float32)
    for frame in frames(speech):  # interleaved, as two sessions would be
        got.append(talking.speech_probability(frame))
        silent.append(quiet.speech_probability(silence))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert max(silent) < 0.1


def test_reset_restores_a_fresh_state(vad: SileroVAD, speech: AudioF32) -> None:
    stream = vad.new_stream()
    first = [stream.speech_probability(f) for f in frames(speech)]
    stream.reset()
    again = [stream.speech_probability(f) for f in frames(speech)]
    np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [480, 513, 1024])
def test_wrong_frame_size_is_refused(vad: SileroVAD, size: int) -> None:
    with pytest.raises(ValueError, match="512"):
        vad.new_stream().speech_probability(np.zeros(size, dtype=np.float32))
