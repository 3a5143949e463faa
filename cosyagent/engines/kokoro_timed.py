"""Kokoro's word and phoneme timings, from the durations its own graph predicts.

Kokoro's duration predictor ends in ``clamp(round(sum(sigmoid(...)) / speed), min=1)``: frames per
token, the graph's only ``Clip`` node. The shipped int8 ONNX file returns only the audio, so
:func:`~cosyagent.engines.kokoro_session.durations_model` adds that tensor as an output named
``duration`` (once, cached, as for Piper: :mod:`cosyagent.engines.onnx_outputs`), the name
kokoro-onnx looks for: its
``create_timed`` then reports each phoneme's span of the audio it returns, after its trimming and
the pauses it would add at punctuation (set to 0 here). The audio is the same as without the
output: plain synthesis runs with kokoro-onnx's ``has_timings`` off, as if the output were absent
(with it on, kokoro-onnx lengthens pauses, and its audio differs). Words are timed
as Piper's are (:func:`~cosyagent.engines.timings.word_timings`): each word phonemized alone and
matched to the sentence's phonemes. English only: Mandarin pieces have no timings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from cosyagent.engines.base import AudioF32
from cosyagent.engines.timings import SymbolSpan, TimedAudio, phoneme_timings, word_timings, written_words

if TYPE_CHECKING:
    from kokoro_onnx import Kokoro


def timed_english(
    kokoro: Kokoro, piece: str, style: np.ndarray, speed: float, lang: str, phonemize: Callable[[str], str]
) -> TimedAudio:
    """One English piece: kokoro-onnx's audio and phoneme spans, and its words matched to them."""
    # kokoro-onnx places pauses at punctuation when it has timings; with them at 0 the audio is what
    # create() makes without timings (the engine keeps has_timings off for that: see load()).
    kokoro.has_timings = True
    try:
        audio, rate, spoken = kokoro.create_timed(
            piece, voice=style, speed=speed, lang=lang, sentence_pause=0.0, clause_pause=0.0
        )
    finally:
        kokoro.has_timings = False
    samples: AudioF32 = np.asarray(audio, dtype=np.float32).reshape(-1)
    spans = [SymbolSpan(t.phoneme, round(t.start * rate), round(t.end * rate)) for t in spoken]
    spans = [span for span in spans if span.end >= span.start]
    words = [(word, list(phonemize(word))) for word in written_words(piece)]
    return TimedAudio(samples, tuple(phoneme_timings(spans, rate)), tuple(word_timings(words, spans, rate)))
