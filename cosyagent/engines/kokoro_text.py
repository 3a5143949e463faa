"""Text preparation for Kokoro: split into pieces, pick the language, Mandarin phonemes.

English goes to Kokoro as text (espeak-ng phonemizes it, ``lang="en-us"``). Text with Han
characters is Mandarin: misaki's zh G2P turns it into Kokoro phonemes, and Latin-letter
runs inside it (brand names, "OK") are phonemized as English.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable
from typing import Protocol

from cosyagent.engines.text_scripts import HAN, KANA

logger = logging.getLogger(__name__)

_SPEAKABLE = re.compile(r"[^\W_]")  # a letter or digit of any script
# After sentence punctuation followed by space (Latin), or right after a CJK full stop.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;…])\s+|(?<=[。！？；])")
_LATIN_RUN = re.compile(r"([A-Za-z][A-Za-z' -]*)|([^A-Za-z]+)")


class Script(enum.Enum):
    ENGLISH = "en"
    MANDARIN = "zh"


def split_text(text: str) -> list[str]:
    """Sentence-sized pieces, each one synthesis call; pieces with nothing to say are dropped."""
    pieces = (p.strip() for p in _SENTENCE_BREAK.split(text))
    return [p for p in pieces if p and _SPEAKABLE.search(p)]


def detect_script(text: str) -> Script:
    """Mandarin if the text has Han characters, else English; kana is refused."""
    if KANA.search(text):
        raise ValueError("Japanese text is not supported (no Japanese G2P installed)")
    return Script.MANDARIN if HAN.search(text) else Script.ENGLISH


class _ZhG2P(Protocol):
    def __call__(self, text: str) -> tuple[str, object]: ...


class MandarinPhonemizer:
    """misaki's zh G2P (the v1.0 "legacy" phoneme set Kokoro-82M v1.0 was trained on).

    ``english`` phonemizes Latin-letter runs. Importing misaki.zh pulls in jieba,
    pypinyin and cn2an (~1 s the first time), so it happens on first use or in
    :meth:`load`. Thread-safe.
    """

    def __init__(self, english: Callable[[str], str]) -> None:
        self._english = english
        self._g2p: _ZhG2P | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        self._get()

    def _get(self) -> _ZhG2P:
        with self._lock:
            if self._g2p is not None:
                return self._g2p
            from misaki.zh import ZHG2P

            # jieba sets its own logger to DEBUG with its own handler on import: quieten it.
            logging.getLogger("jieba").setLevel(logging.WARNING)

            g2p: _ZhG2P = ZHG2P()
            g2p("中文")  # builds jieba's prefix dictionary now rather than mid-reply
            self._g2p = g2p
            return g2p

    def __call__(self, text: str) -> str:
        g2p = self._get()
        parts: list[str] = []
        for latin, other in _LATIN_RUN.findall(text):
            if latin.strip():
                parts.append(self._english(latin.strip()))
            elif other.strip():
                phonemes, _ = g2p(other)
                parts.append(phonemes)
        return " ".join(p.strip() for p in parts if p.strip())
