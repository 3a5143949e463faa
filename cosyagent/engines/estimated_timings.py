"""Word and phoneme times *estimated* from audio and its text, for a synthesizer with no alignment.

CosyVoice3 turns text into speech tokens (25 per second: 960 samples at 24 kHz each) with an
autoregressive LLM, then into audio with flow matching: nothing in it says which token speaks
which word. So the times here are an estimate, made after a piece of text is synthesized, from
the audio and the text alone:

1. **Where the speech is**: 10 ms frames' energy; frames within 40 dB of the loudest are speech.
   Silence before and after is trimmed; silent runs of 120 ms or more inside are *pauses*.
2. **How long each word should take**: the number of its sounds (weighting vowels more measured
   no better). English (any Latin-script word) is phonemized by espeak-ng, the one Piper ships
   (word by word, under a lock: espeak is not thread-safe; the letters if it cannot); a Han
   character is one syllable, its sounds from its pinyin (pypinyin, when installed) or else a
   fixed onset + open vowel; kana and hangul are one syllable each. A comma adds one sound's
   worth of pause, a full stop two.
3. **Which pauses fall between which words**: a small dynamic programme matches each pause to a
   word boundary (cheap at punctuation, dearer elsewhere) or leaves it inside a word, choosing
   the matching whose stretches of speech best fit the words' expected lengths at one rate (each
   pause is tried at the 10 boundaries nearest where it would fall at that rate).
4. Within each stretch the words share its time in proportion to their lengths; a word's sounds
   share the word's time likewise, and a pause is a ``,`` phoneme (viseme ``sil``).

All times lie within the audio (ms from its first sample). The estimate's error, measured on
Piper and Kokoro speech whose true word times are known, is in docs/timestamps.md.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cosyagent.audio.pcm import frame_levels_db
from cosyagent.engines.base import AudioF32
from cosyagent.engines.text_scripts import HAN
from cosyagent.engines.timings import STRESS_MARKS, PhonemeTiming, TimedAudio, WordTiming, is_sound

FRAME_S = 0.010
SILENCE_DB = 40.0  # a frame this far below the loudest frame is silent
MIN_PAUSE_S = 0.12
MAX_PAUSES = 12  # the longest ones; shorter dips are left inside words
PUNCTUATION_WEIGHT = {",": 1.0, ";": 1.5, ":": 1.5, ".": 2.0, "!": 2.0, "?": 2.0, "…": 2.0}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_FULLWIDTH_PUNCTUATION = {"，": ",", "、": ",", "。": ".", "！": "!", "？": "?", "；": ";", "：": ":"}
_EDGE = "\"'“”‘’()[]{},.;:!?…-–—«»《》「」『』（）"
_STRIP = _EDGE + "".join(_FULLWIDTH_PUNCTUATION)

Phonemize = Callable[[str], list[str]]


@dataclass(frozen=True)
class SpokenWord:
    """A word as written, the sounds it is expected to have, and the pause weight after it."""

    text: str
    sounds: tuple[str, ...]
    pause_after: float = 0.0

    @property
    def weight(self) -> float:
        """Its expected length, in sounds (one each: weighting vowels more measured no better)."""
        return float(len(self.sounds) or 1)


def spoken_words(text: str, phonemize: Phonemize | None = None) -> list[SpokenWord]:
    """The words of ``text`` (a Han, kana or hangul character is a word of its own) with their sounds."""
    phonemize = phonemize or espeak_sounds
    words: list[SpokenWord] = []
    for token in text.split():
        for part in _split_cjk(token):
            trailing = part[len(part.rstrip(_STRIP)) :]
            word = part.strip(_STRIP)
            pause = max((PUNCTUATION_WEIGHT.get(_FULLWIDTH_PUNCTUATION.get(c, c), 0.0) for c in trailing), default=0.0)
            if not word:
                if words and pause:
                    last = words[-1]
                    words[-1] = SpokenWord(last.text, last.sounds, max(last.pause_after, pause))
                continue
            words.append(SpokenWord(word, tuple(_sounds_of(word, phonemize)), pause))
    return words


def _split_cjk(token: str) -> list[str]:
    """``token`` cut around each CJK character; punctuation after one stays with it."""
    parts: list[str] = []
    current = ""
    for char in token:
        if _CJK.match(char):
            if current:
                parts.append(current)
            parts.append(char)
            current = ""
        elif parts and not current and (char in _FULLWIDTH_PUNCTUATION or char in _EDGE):
            parts[-1] += char
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _sounds_of(word: str, phonemize: Phonemize) -> list[str]:
    if HAN.match(word):
        return pinyin_sounds(word)
    if _CJK.match(word):
        return ["k", "a"]  # kana / hangul: one syllable, consonant + vowel
    try:
        sounds = [s for s in phonemize(word) if is_sound(s) and s not in STRESS_MARKS]
    except (RuntimeError, ValueError, OSError):
        sounds = []
    return sounds or letter_sounds(word)


_ESPEAK_LOCK = threading.Lock()


@functools.cache
def _espeak() -> object | None:
    try:
        from piper.phonemize_espeak import EspeakPhonemizer
    except ImportError:
        return None
    return EspeakPhonemizer()


@functools.lru_cache(maxsize=4096)
def espeak_sounds(word: str) -> list[str]:
    """espeak-ng's en-us sounds of one word (the phonemizer Piper ships); [] without it."""
    with _ESPEAK_LOCK:
        phonemizer = _espeak()
        if phonemizer is None:
            return []
        sentences: list[list[str]] = phonemizer.phonemize("en-us", word)  # type: ignore[attr-defined]
    return [symbol for sentence in sentences for symbol in sentence]


_LETTERS = {"a": "a", "e": "ə", "i": "ɪ", "o": "o", "u": "ʊ", "y": "ɪ", "c": "k", "j": "ʒ", "q": "k", "x": "s"}


def letter_sounds(word: str) -> list[str]:
    """A coarse reading from the letters alone (no phonemizer): one sound per letter, doubles merged."""
    sounds: list[str] = []
    for char in word.lower():
        if not char.isalpha() and not char.isdigit():
            continue
        sound = _LETTERS.get(char, char) if char.isalpha() else "ə"
        if not sounds or sounds[-1] != sound:
            sounds.append(sound if sound.isascii() or is_sound(sound) else "ə")
    return sounds


_INITIALS = {
    "zh": "ʂ", "ch": "ʂ", "sh": "ʂ", "b": "p", "p": "p", "m": "m", "f": "f", "d": "t", "t": "t", "n": "n",
    "l": "l", "g": "k", "k": "k", "h": "x", "j": "ɕ", "q": "ɕ", "x": "ɕ", "r": "ɻ", "z": "s", "c": "s",
    "s": "s", "y": "j", "w": "w",
}  # fmt: skip
_FINALS = {"a": "a", "o": "o", "e": "ə", "i": "i", "u": "u", "v": "y", "ü": "y", "n": "n", "g": "ŋ", "r": "ɚ"}


@functools.cache
def _pinyin() -> Callable[[str], str] | None:
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:
        return None
    return lambda char: str(lazy_pinyin(char, style=Style.NORMAL)[0])


def pinyin_sounds(char: str) -> list[str]:
    """A Han character's sounds from its pinyin (``zhong`` -> ʂ o ŋ); onset + open vowel without pypinyin."""
    reading = _pinyin()
    syllable = reading(char) if reading is not None else ""
    if not syllable.isascii() or not syllable.isalpha():
        return ["t", "a"]
    initial = next((i for i in ("zh", "ch", "sh") if syllable.startswith(i)), syllable[0])
    sounds = [_INITIALS[initial]] if initial in _INITIALS else []
    final = syllable[len(initial) :] if sounds else syllable
    if sounds and sounds[0] in "ɕj" and final.startswith("u"):
        final = "v" + final[1:]  # ju, qu, xu, yu: the u is ü
    final = final.replace("ng", "g")
    sounds.extend(_FINALS[c] for c in final if c in _FINALS)
    return sounds or ["a"]


# --- the audio ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Speech:
    """Where the speech of a piece of audio is, in samples: its span and the pauses inside it."""

    start: int
    end: int
    pauses: tuple[tuple[int, int], ...]


def find_speech(audio: AudioF32, sample_rate: int) -> Speech:
    """Speech span and pauses from 10 ms frames' energy (see the module's notes)."""
    frame = max(1, round(FRAME_S * sample_rate))
    count = audio.size // frame
    if count == 0:
        return Speech(0, audio.size, ())
    level = frame_levels_db(audio, frame)
    loud = level >= level.max() - SILENCE_DB
    voiced = np.flatnonzero(loud)
    if voiced.size == 0 or level.max() < -80.0:
        return Speech(0, audio.size, ())
    first, last = int(voiced[0]), int(voiced[-1]) + 1
    pauses: list[tuple[int, int]] = []
    run = None
    for index in range(first, last):
        if not loud[index]:
            run = index if run is None else run
        elif run is not None:
            if (index - run) * FRAME_S >= MIN_PAUSE_S:
                pauses.append((run * frame, index * frame))
            run = None
    longest = sorted(sorted(pauses, key=lambda p: p[0] - p[1])[:MAX_PAUSES])
    return Speech(first * frame, min(audio.size, last * frame), tuple(longest))


# --- words onto the speech ---------------------------------------------------------------

_FIT = 4.0  # cost of a stretch of speech whose length is e (2.7) times what its words expect: 4
_UNPUNCTUATED_BREAK = 1.0  # a pause between words with no punctuation between them
_IGNORED_PAUSE = 0.5  # a pause left inside a word (a stop's closure): this, plus 4 per second of it
_CANDIDATES = 10  # the word boundaries nearest where a pause would fall at one rate: the ones tried for it


def estimate_timings(audio: AudioF32, sample_rate: int, text: str, phonemize: Phonemize | None = None) -> TimedAudio:
    """``audio`` (the speech of ``text``) with estimated phoneme and word times, ms from its first sample."""
    words = spoken_words(text, phonemize)
    speech = find_speech(audio, sample_rate)
    if not words:
        return TimedAudio(audio, (), ())
    cuts = _place_pauses(words, speech, sample_rate)

    def ms(samples: float) -> float:  # never past the audio's end, on the clock 1000 * size / rate gives
        return min(samples, audio.size) * 1000.0 / sample_rate

    phonemes: list[PhonemeTiming] = []
    timed: list[WordTiming] = []
    first, position = 0, speech.start
    for last, (pause_start, pause_end) in [*cuts, (len(words) - 1, (speech.end, speech.end))]:
        _share(words[first : last + 1], position, pause_start, ms, timed, phonemes)
        if pause_end > pause_start:
            phonemes.append(PhonemeTiming(",", ms(pause_start), ms(pause_end)))
        first, position = last + 1, pause_end
    return TimedAudio(audio, tuple(phonemes), tuple(timed))


def _share(
    words: Sequence[SpokenWord],
    start: int,
    end: int,
    ms: Callable[[float], float],
    timed: list[WordTiming],
    phonemes: list[PhonemeTiming],
) -> None:
    """Words (and the short pauses after all but the last) share ``start..end`` by their weights."""
    units = [(word, word.weight, word.pause_after if k < len(words) - 1 else 0.0) for k, word in enumerate(words)]
    total = sum(weight + pause for _word, weight, pause in units)
    per_unit = max(end - start, 0) / total
    at = float(start)
    for word, weight, pause in units:
        word_end = at + weight * per_unit
        timed.append(WordTiming(word.text, ms(at), ms(word_end)))
        sound_at = at
        for sound in word.sounds:
            sound_end = sound_at + per_unit
            phonemes.append(PhonemeTiming(sound, ms(sound_at), ms(min(sound_end, word_end))))
            sound_at = sound_end
        at = word_end + pause * per_unit
        if pause:
            phonemes.append(PhonemeTiming(",", ms(word_end), ms(at)))


def _place_pauses(words: Sequence[SpokenWord], speech: Speech, sample_rate: int) -> list[tuple[int, tuple[int, int]]]:
    """Which pauses end which word (``(index of the word before it, pause)``), by the least-cost matching."""
    pauses, count = speech.pauses, len(words)
    if not pauses or count < 2:
        return []
    prefix = np.concatenate([[0.0], np.cumsum([word.weight for word in words])])
    voiced = (speech.end - speech.start) - sum(end - start for start, end in pauses)
    rate = max(voiced, 1) / prefix[-1]  # samples per unit of weight

    def fit(first: int, stop: int, duration: int) -> float:
        return _FIT * math.log(max(duration, 1) / (rate * (prefix[stop] - prefix[first]))) ** 2

    def ignored(first: int, stop: int) -> float:
        return sum(_IGNORED_PAUSE + 4.0 * (end - start) / sample_rate for start, end in pauses[first:stop])

    def after(pause: int) -> int:
        return pauses[pause][1] if pause >= 0 else speech.start

    # best[(pause, word)]: the least cost of speech up to ``pause``, which follows ``word``
    best: dict[tuple[int, int], tuple[float, tuple[int, int] | None]] = {(-1, -1): (0.0, None)}
    for pause in range(len(pauses)):
        for word in _nearby_boundaries(prefix, pauses, pause, speech.start, rate):
            boundary = 0.0 if words[word].pause_after else _UNPUNCTUATED_BREAK
            options = [
                (cost + fit(w + 1, word + 1, pauses[pause][0] - after(p)) + ignored(p + 1, pause) + boundary, (p, w))
                for (p, w), (cost, _) in best.items()
                if p < pause and w < word
            ]
            if options:
                best[(pause, word)] = min(options)
    _cost, state = min(
        (cost + fit(w + 1, count, speech.end - after(p)) + ignored(p + 1, len(pauses)), (p, w))
        for (p, w), (cost, _) in best.items()
        if w < count - 1
    )
    cuts: list[tuple[int, tuple[int, int]]] = []
    step: tuple[int, int] | None = state
    while step is not None and step != (-1, -1):
        cuts.append((step[1], pauses[step[0]]))
        step = best[step][1]
    return cuts[::-1]


def _nearby_boundaries(
    prefix: np.ndarray, pauses: Sequence[tuple[int, int]], pause: int, start: int, rate: float
) -> list[int]:
    """The boundaries (after word ``j``) a pause is tried at: those nearest where it falls at one rate."""
    voiced_before = pauses[pause][0] - start - sum(end - begin for begin, end in pauses[:pause])
    distance = np.abs(prefix[1:-1] - voiced_before / rate)
    return sorted(int(j) for j in np.argsort(distance, kind="stable")[:_CANDIDATES])
