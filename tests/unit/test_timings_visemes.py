"""Phoneme and word timings from symbol durations, and the phoneme -> Oculus viseme table."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cosyagent.engines.piper_tts import default_model_path
from cosyagent.engines.timings import SymbolSpan, phoneme_timings, symbol_spans, word_timings
from cosyagent.engines.visemes import _GROUPS, MARKS, VISEME_NAMES, VISEMES, viseme_of, viseme_timings


def test_every_symbol_of_pipers_phoneme_map_has_a_viseme_or_is_a_mark() -> None:
    config = json.loads(default_model_path().with_suffix(".onnx.json").read_text(encoding="utf-8"))
    symbols = set(config["phoneme_id_map"])
    assert len(symbols) > 100
    unmapped = {s for s in symbols if s not in VISEMES and s not in MARKS}
    assert not unmapped, [f"U+{ord(s):04X} {s}" for s in sorted(unmapped)]


def test_the_table_uses_the_fifteen_visemes_and_no_symbol_twice() -> None:
    assert len(VISEME_NAMES) == 15 and set(_GROUPS) == set(VISEME_NAMES)
    counts = Counter(symbol for symbols in _GROUPS.values() for symbol in symbols)
    assert [s for s, n in counts.items() if n > 1] == []
    assert not MARKS & set(VISEMES)


@pytest.mark.parametrize(
    ("phoneme", "viseme"),
    [("p", "PP"), ("ˈoː", "oh"), ("ð", "TH"), ("ɹ", "RR"), ("ʃ", "CH"), ("ŋ", "kk"), (",", "sil"), ("ˈ", "sil")],
)
def test_viseme_of(phoneme: str, viseme: str) -> None:
    assert viseme_of(phoneme) == viseme


def test_unknown_symbol_is_a_precise_error() -> None:
    with pytest.raises(ValueError, match="U\\+4E2D"):
        viseme_of("中")


def test_phonemes_fold_stress_and_length_marks_and_skip_word_breaks() -> None:
    spans = symbol_spans(["ˈ", "a", "ː", " ", "b", "."], [100, 200, 100, 50, 300, 250])
    timed = phoneme_timings(spans, 1000)
    assert [(p.phoneme, p.start_ms, p.end_ms) for p in timed] == [("ˈaː", 0, 400), ("b", 450, 750), (".", 750, 1000)]
    assert [(v.viseme, v.start_ms) for v in viseme_timings(timed)] == [("aa", 0), ("PP", 450), ("sil", 750)]


def test_words_are_matched_where_espeak_joins_and_rereads_them() -> None:
    # "a cup of the" read in context as "ɐ kʌp ʌvðə": "a" alone is "eɪ", "of the" is joined
    symbols = ["ɐ", " ", "k", "ʌ", "p", " ", "ʌ", "v", "ð", "ə", "."]
    spans = symbol_spans(symbols, [10] * len(symbols), offset=5)
    words = [("a", ["ˈ", "e", "ɪ"]), ("cup", ["k", "ˈ", "ʌ", "p"]), ("--", []), ("of", ["ʌ", "v"]), ("the", ["ð", "ə"])]
    timed = word_timings(words, spans, 1000)
    assert [(w.text, w.start_ms, w.end_ms) for w in timed] == [
        ("a", 5, 15),
        ("cup", 25, 55),
        ("of", 65, 85),
        ("the", 85, 105),
    ]


def test_durations_must_fit_the_symbols() -> None:
    with pytest.raises(ValueError, match="2 symbols but 1"):
        symbol_spans(["a", "b"], [1])
    assert symbol_spans(["a"], [3], offset=2) == [SymbolSpan("a", 2, 5)]
