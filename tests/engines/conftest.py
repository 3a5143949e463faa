"""Shared fixtures for the engine tests: real models, real audio, loaded once per session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cosyagent.engines.base import AudioF32
from cosyagent.engines.whisper_asr import WhisperASR  # after the offline switch

DATA = Path(__file__).resolve().parent.parent / "data"

_NORMALIZE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after lowercasing and stripping punctuation."""
    return float(jiwer.wer(reference, hypothesis, reference_transform=_NORMALIZE, hypothesis_transform=_NORMALIZE))


@pytest.fixture(scope="session")
def wer() -> Callable[[str, str], float]:
    return word_error_rate


@pytest.fixture(scope="session")
def load_clip() -> Callable[[str], tuple[AudioF32, int]]:
    def load(name: str) -> tuple[AudioF32, int]:
        audio, rate = sf.read(DATA / name, dtype="float32", always_2d=False)
        return np.asarray(audio, dtype=np.float32), int(rate)

    return load


@pytest.fixture(scope="session")
def asr() -> Iterator[WhisperASR]:
    """Whisper tiny.en, shared by the ASR tests and the TTS round-trip test."""
    engine = WhisperASR()
    engine.load()
    yield engine
    engine.close()
