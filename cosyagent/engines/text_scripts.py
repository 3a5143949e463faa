"""The writing systems text is tested for, and the names of languages, defined once for the engines,
the reply pipeline and the API."""

from __future__ import annotations

import re

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # a Chinese character (CJK ideographs)
KANA = re.compile(r"[\u3040-\u30ff]")  # Japanese hiragana or katakana

LANGUAGE_NAMES = {  # language codes (Whisper's, Fun-ASR's) as English names
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "ar": "Arabic",
    "hi": "Hindi",
    "nl": "Dutch",
    "vi": "Vietnamese",
    "yue": "Cantonese",
}


def language_list(codes: tuple[str, ...]) -> str:
    """``("zh", "en", "ja")`` as "Chinese, English and Japanese", for messages."""
    names = [LANGUAGE_NAMES.get(code, code) for code in codes]
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def unspeakable_language(text: str, languages: tuple[str, ...]) -> str | None:
    """The language of a script in ``text`` that a voice speaking only ``languages`` cannot read
    (kana without Japanese; Chinese characters without Chinese or Japanese), else None. An engine
    that states no languages is taken to read anything."""
    if not languages:
        return None
    if KANA.search(text) and "ja" not in languages:
        return "ja"
    if HAN.search(text) and not {"zh", "ja"} & set(languages):
        return "zh"
    return None
