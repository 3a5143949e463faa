"""When each phoneme and word of synthesized audio is heard, from the synthesizer's own durations.

A TTS graph with a duration predictor decides how many samples each input symbol lasts; summed,
those give every symbol's start and end in the audio it made (:func:`symbol_spans`). Symbols are
IPA codepoints as espeak writes them: stress marks belong to the sound after them, length marks
and diacritics to the sound before (:func:`phoneme_timings`). Words come from the text: each word
is phonemized on its own and its symbols are matched to the sentence's (:func:`word_timings`); a
match, not a count, because espeak joins words ("of the" -> ``ʌvðə``) and reads some differently
in context ("a" -> ``ɐ``, alone ``eɪ``).
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cosyagent.engines.base import AudioF32, CancelToken, EngineInfo

STRESS_MARKS = frozenset("ˈˌ")
"""Written before the syllable they stress: their time joins the next sound."""
MODIFIERS = frozenset("ːˑʰʲ˞ˤ↓")
"""Length marks, secondary articulations, tone: their time joins the sound before."""
WORD_BREAK = " "
_WORD_EDGE_PUNCTUATION = "\"'“”‘’()[]{},.;:!?…-–—"


def written_words(text: str) -> list[str]:
    """The words of ``text`` as written, without the punctuation around them."""
    return [word for token in text.split() if (word := token.strip(_WORD_EDGE_PUNCTUATION))]


def is_modifier(symbol: str) -> bool:
    return symbol in MODIFIERS or unicodedata.combining(symbol) != 0


def is_sound(symbol: str) -> bool:
    """A symbol that is a sound of its own: a letter, not a mark, a space or punctuation."""
    return len(symbol) == 1 and unicodedata.category(symbol).startswith("L") and not is_modifier(symbol)


@dataclass(frozen=True)
class PhonemeTiming:
    phoneme: str
    start_ms: float
    end_ms: float

    def __post_init__(self) -> None:
        if not 0 <= self.start_ms <= self.end_ms:
            raise ValueError(f"phoneme {self.phoneme!r}: need 0 <= start_ms <= end_ms, got {self}")


@dataclass(frozen=True)
class WordTiming:
    text: str
    start_ms: float
    end_ms: float

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("a timed word needs its text")
        if not 0 <= self.start_ms <= self.end_ms:
            raise ValueError(f"word {self.text!r}: need 0 <= start_ms <= end_ms, got {self}")


@dataclass(frozen=True)
class TimedAudio:
    """A chunk of audio with its phonemes and words, times in ms from the chunk's first sample."""

    audio: AudioF32
    phonemes: tuple[PhonemeTiming, ...]
    words: tuple[WordTiming, ...]


@runtime_checkable
class TimedSynthesizer(Protocol):
    """A synthesizer that can say when each word and phoneme of its audio is heard (``info.times_words``)."""

    @property
    def info(self) -> EngineInfo: ...

    def synthesize_timed(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[TimedAudio]:
        """Like ``synthesize``, each chunk with its phonemes and words (ms from the chunk's first sample)."""
        ...


def can_time_words(tts: object) -> bool:
    """Whether ``tts`` gives timed audio: it has ``synthesize_timed`` and its model exposed durations."""
    return isinstance(tts, TimedSynthesizer) and tts.info.times_words


@dataclass(frozen=True)
class SymbolSpan:
    symbol: str
    start: int  # samples
    end: int


def symbol_spans(symbols: Sequence[str], samples: Sequence[int], offset: int = 0) -> list[SymbolSpan]:
    """Each symbol's sample span, given how many samples each one lasts, starting at ``offset``."""
    if len(symbols) != len(samples):
        raise ValueError(f"{len(symbols)} symbols but {len(samples)} durations")
    spans: list[SymbolSpan] = []
    position = offset
    for symbol, count in zip(symbols, samples, strict=True):
        if count < 0:
            raise ValueError(f"negative duration for {symbol!r}")
        spans.append(SymbolSpan(symbol, position, position + count))
        position += count
    return spans


def phoneme_timings(spans: Sequence[SymbolSpan], sample_rate: int) -> list[PhonemeTiming]:
    """Sounds and pauses (punctuation) with their marks folded in; word breaks are left as gaps."""
    merged: list[SymbolSpan] = []
    stress: SymbolSpan | None = None
    for span in spans:
        if span.symbol in STRESS_MARKS:
            stress = stress or span
        elif is_modifier(span.symbol) and merged and stress is None:
            merged[-1] = SymbolSpan(merged[-1].symbol + span.symbol, merged[-1].start, span.end)
        elif span.symbol == WORD_BREAK or is_modifier(span.symbol):
            stress = None
        elif stress is not None:
            merged.append(SymbolSpan(stress.symbol + span.symbol, stress.start, span.end))
            stress = None
        else:
            merged.append(span)
    scale = 1000.0 / sample_rate
    return [PhonemeTiming(span.symbol, span.start * scale, span.end * scale) for span in merged]


def word_timings(
    words: Sequence[tuple[str, Sequence[str]]], spans: Sequence[SymbolSpan], sample_rate: int
) -> list[WordTiming]:
    """Time each ``(text, symbols it reads as alone)`` by matching its sounds to the sentence's ``spans``.

    A word with no sounds of its own ("--") is left out. A word whose sounds espeak merged into
    its neighbour's gets a zero-length timing at the neighbour's boundary.
    """
    sentence = [index for index, span in enumerate(spans) if is_sound(span.symbol)]
    if not sentence:
        return []
    spoken = [(text, [s for s in symbols if is_sound(s)]) for text, symbols in words]
    spoken = [(text, sounds) for text, sounds in spoken if text and sounds]
    alone: list[str] = []
    firsts: list[int] = []
    for _text, sounds in spoken:
        firsts.append(len(alone))
        alone.extend(sounds)
    matcher = difflib.SequenceMatcher(None, alone, [spans[i].symbol for i in sentence], autojunk=False)
    blocks = matcher.get_matching_blocks()
    starts: list[int] = []
    for first in firsts:
        position = _locate(first, blocks)
        starts.append(min(max(position, starts[-1] if starts else 0), len(sentence) - 1))
    scale = 1000.0 / sample_rate
    timed: list[WordTiming] = []
    for k, (text, _sounds) in enumerate(spoken):
        start = starts[k]
        last = (starts[k + 1] if k + 1 < len(starts) else len(sentence)) - 1
        start_sample = spans[sentence[start]].start
        end_sample = max(spans[sentence[max(last, start)]].end, start_sample) if last >= start else start_sample
        timed.append(WordTiming(text, start_sample * scale, end_sample * scale))
    return timed


def _locate(index: int, blocks: Sequence[difflib.Match]) -> int:
    """Where ``index`` of the first sequence falls in the second, by the matching blocks around it.

    Inside a mismatch it is as far past the previous match as in its own sequence, but never
    past the next match.
    """
    after_a = after_b = 0
    for block in blocks:
        if index < block.a:
            return min(after_b + index - after_a, block.b)
        if index < block.a + block.size:
            return block.b + index - block.a
        after_a, after_b = block.a + block.size, block.b + block.size
    return after_b
