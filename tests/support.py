"""Helpers shared by every test folder: the real clips in tests/data, a WER metric and a
scripted VAD."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import soxr
from num2words import num2words

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.records import QUESTIONS
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
        jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")  # "1,500.5", "56"


_TENS_HYPHEN_UNITS = re.compile(
    r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)-(one|two|three|four|five|six|seven|eight|nine)\b",
    re.IGNORECASE,
)


def spell_numbers(text: str) -> str:
    """Digits as words, the way a recognizer may write what it hears: "120" and "one hundred
    twenty", "twenty-four", "twenty four" and "24", "0°C" and "zero degrees C", "4%" and "four
    percent" count the same. Only a number's hyphen becomes a space: any other is punctuation,
    removed by the WER's normalization, so "to-day" is still "today"."""
    text = text.replace("%", " percent").replace("°C", " degrees C").replace("°F", " degrees F")
    text = _NUMBER.sub(lambda number: f" {_spelled(number[0])} ", text)
    return _TENS_HYPHEN_UNITS.sub(r"\1 \2", text)


def _spelled(number: str) -> str:
    digits = number.replace(",", "")
    return str(num2words(float(digits) if "." in digits else int(digits))).replace(" and ", " ")


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after lowercasing, stripping punctuation and spelling digits ("4%" and "four percent" count the same)."""
    reference, hypothesis = spell_numbers(reference), spell_numbers(hypothesis)
    return float(jiwer.wer(reference, hypothesis, reference_transform=_NORMALIZE, hypothesis_transform=_NORMALIZE))


def words_heard(reference: str, hypothesis: str) -> float:
    """The share of the reference's words the hypothesis has, in order (normalized as
    :func:`word_error_rate`): words it adds do not count against it. For a clip whose reference
    is not verbatim (``en_news_movement_8k.wav``: cut-off words at its edge, a stammer)."""
    reference, hypothesis = spell_numbers(reference), spell_numbers(hypothesis)
    words = jiwer.process_words(reference, hypothesis, reference_transform=_NORMALIZE, hypothesis_transform=_NORMALIZE)
    return words.hits / (words.hits + words.substitutions + words.deletions)


def read_clip(name: str, rate: int) -> AudioF32:
    """A clip from tests/data as mono float32 at ``rate``."""
    audio, source_rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate)
    return np.asarray(mono, dtype=np.float32)


def dublin_question_alone(rate: int) -> AudioF32:
    """``en_dublin_q.wav`` cut where the bench cuts it (``benchmarks.records.QUESTIONS``), before
    the onset of the speaker's next word that ends the file: some CPUs' VAD hears that onset as a
    second turn (tests/data/README.md)."""
    name, question_end_s, _ = QUESTIONS[0]
    return read_clip(name, rate)[: int(question_end_s * rate)]


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
