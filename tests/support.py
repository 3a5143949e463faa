"""Helpers shared by every test folder: the real clips in tests/data, a WER metric and a
scripted VAD."""

from __future__ import annotations

import os
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import soxr

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cosyagent.engines.base import AudioF32

DATA = Path(__file__).resolve().parent / "data"

REFERENCES = {
    "en_dublin_q.wav": "and says, how do I get to Dublin?",
    "en_wealth_tax_q.wav": "Who's going to implement a 4% global wealth tax?",
    "en_philosophy_22s.wav": (
        "That is to say much of political philosophy develops theories that take no account of where we actually "
        "are and how the theories that people argue about in the journals and in the literature actually could be "
        "implemented in the world, if at all."
    ),
    "en_news_movement_8k.wav": "We have a movement going on folks, we have a movement. This is not a normal situation.",
}

_NORMALIZE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.SubstituteRegexes({r"(\d)%": r"\1 percent"}),
        jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after lowercasing and stripping punctuation ("4%" and "4 percent" count the same)."""
    return float(jiwer.wer(reference, hypothesis, reference_transform=_NORMALIZE, hypothesis_transform=_NORMALIZE))


def words_heard(reference: str, hypothesis: str) -> float:
    """The share of the reference's words the hypothesis has, in order (normalized as
    :func:`word_error_rate`): words it adds do not count against it. For a clip whose reference
    is not verbatim (``en_news_movement_8k.wav``: cut-off words at its edge, a stammer)."""
    words = jiwer.process_words(reference, hypothesis, reference_transform=_NORMALIZE, hypothesis_transform=_NORMALIZE)
    return words.hits / (words.hits + words.substitutions + words.deletions)


def read_clip(name: str, rate: int) -> AudioF32:
    """A clip from tests/data as mono float32 at ``rate``."""
    audio, source_rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate)
    return np.asarray(mono, dtype=np.float32)


def pcm16(audio: AudioF32) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class ScriptedVAD:
    """A VAD stream that hands out the next scripted speech probability for each frame, so that
    turn detection can be driven frame by frame without real speech."""

    def __init__(self, probabilities: list[float]) -> None:
        self._left = list(probabilities)

    def speech_probability(self, frame: AudioF32) -> float:
        return self._left.pop(0)

    def reset(self) -> None: ...
