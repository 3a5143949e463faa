"""Phonemes to mouth shapes: the 15 Oculus (Meta) visemes, from the IPA symbols espeak writes.

The set is Oculus Lipsync's, also what ARKit/Ready Player Me avatars ship blend shapes for:
``sil`` (mouth at rest), ``PP`` (p b m), ``FF`` (f v), ``TH`` (θ ð), ``DD`` (t d), ``kk`` (k g),
``CH`` (tʃ dʒ ʃ ʒ), ``SS`` (s z), ``nn`` (n l), ``RR`` (ɹ r), ``aa`` (ɑ a æ), ``E`` (e ɛ ə),
``ih`` (i ɪ), ``oh`` (o ɔ), ``ou`` (u ʊ w).

:data:`VISEMES` holds one entry per symbol of Piper's phoneme map (the IPA alphabet espeak uses
for every language, the ASCII letters, punctuation and digits): sounds go to the viseme of the
nearest English sound by place of articulation and lip shape (a velar or uvular consonant to
``kk``, a retroflex stop to ``DD``, a rounded vowel to ``oh``/``ou``); punctuation, digits and
Piper's start/end/pad symbols are pauses, ``sil``. :data:`MARKS` (stress, length, diacritics,
tone) are not sounds: a phoneme written with them takes the viseme of its sound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from cosyagent.engines.timings import PhonemeTiming

Viseme = Literal["sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou"]
VISEME_NAMES: tuple[Viseme, ...] = get_args(Viseme)

_GROUPS: dict[Viseme, str] = {
    "PP": "pbmɓʙβɸʘ",
    "FF": "fvɱʋⱱ",
    "TH": "θð",
    "DD": "tdɖɗʈɾɽɺǀǁǂǃ",
    "kk": "kgɡqɢɠŋxɣχʁħhɦʜɰçʝcɟʛʄʟʕʡʢ",
    "CH": "ʃʒɕʑʂʐɧ",
    "SS": "szɬɮ",
    "nn": "nlɲɳɴɫɭʎ",
    "RR": "rɹɻʀɚ",
    "aa": "aɑɐæɒʌɶ",
    "E": "eɛəɘɜɞεœø",
    "ih": "iɪyɨᵻjʏ",
    "oh": "oɔɵɤ",
    "ou": "uʊɯʉwʍɥ",
    "sil": " !\"#$'(),-.:;?^_0123456789ʔ",
}

VISEMES: dict[str, Viseme] = {symbol: viseme for viseme, symbols in _GROUPS.items() for symbol in symbols}
MARKS = frozenset("ˈˌːˑʰʲ˞ˤ↓\u0303\u0327\u0329\u032a\u032f")


def viseme_of(phoneme: str) -> Viseme:
    """The viseme of a phoneme as :func:`~cosyagent.engines.timings.phoneme_timings` writes it ("ˈoː").

    ValueError for a symbol this table does not know (never one of Piper's).
    """
    for symbol in phoneme:
        if symbol in MARKS:
            continue
        viseme = VISEMES.get(symbol)
        if viseme is None:
            raise ValueError(f"no viseme for {symbol!r} (U+{ord(symbol):04X}) in {phoneme!r}")
        return viseme
    return "sil"


@dataclass(frozen=True)
class VisemeTiming:
    viseme: Viseme
    start_ms: float


def viseme_timings(phonemes: Sequence[PhonemeTiming], *, unknown: Viseme = "sil") -> list[VisemeTiming]:
    """Where the mouth shape changes: one entry per run of the same viseme, and ``sil`` at the end.

    ``unknown`` stands in for a symbol outside the table, so one odd symbol cannot stop a face.
    """
    timings: list[VisemeTiming] = []
    for phoneme in phonemes:
        try:
            viseme = viseme_of(phoneme.phoneme)
        except ValueError:
            viseme = unknown
        if not timings or timings[-1].viseme != viseme:
            timings.append(VisemeTiming(viseme, phoneme.start_ms))
    if phonemes and timings[-1].viseme != "sil":
        timings.append(VisemeTiming("sil", phonemes[-1].end_ms))
    return timings


def known_symbols(symbols: Iterable[str]) -> set[str]:
    """The symbols among ``symbols`` that the table maps (as a sound or a mark)."""
    return {symbol for symbol in symbols if symbol in VISEMES or symbol in MARKS}
