"""Which text a voice of stated languages cannot read: what the speech route refuses up front."""

from __future__ import annotations

import pytest

from cosyagent.engines.text_scripts import language_list, unspeakable_language

CASES = [
    ("Hello there.", ("en",), None),
    ("你好，今天天气很好。", ("en",), "zh"),
    ("Hello there. 你好。", ("en",), "zh"),  # a later clause counts as much as the first
    ("こんにちは。", ("en",), "ja"),
    ("Hello there. こんにちは。", ("en", "zh"), "ja"),  # Kokoro: Mandarin, no Japanese
    ("東京大学", ("en", "zh"), None),  # kanji alone are Chinese characters to it
    ("你好", ("en", "zh"), None),
    ("東京へ行きます。", ("zh", "en", "ja"), None),
    ("こんにちは。你好", (), None),  # an engine that states no languages (CosyVoice) reads anything
]


@pytest.mark.parametrize(("text", "languages", "refused"), CASES)
def test_scripts_a_voice_cannot_read(text: str, languages: tuple[str, ...], refused: str | None) -> None:
    assert unspeakable_language(text, languages) == refused


def test_languages_are_listed_by_name_for_messages() -> None:
    assert language_list(("en",)) == "English"
    assert language_list(("en", "zh")) == "English and Chinese"
    assert language_list(("zh", "en", "ja")) == "Chinese, English and Japanese"
    assert language_list(("xx",)) == "xx"  # a code without a name stays a code
