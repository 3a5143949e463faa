"""Moonshine's pieces that need no model: the tokenizer file format, the token bound, the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosyagent.config import ASRConfig, ConfigError
from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.language_guard import LanguageCheckedASR
from cosyagent.engines.moonshine_asr import MIN_TOKENS, MoonshineASR, max_new_tokens
from cosyagent.engines.moonshine_files import Tokenizer
from cosyagent.engines.whisper_asr import WhisperASR
from cosyagent.runtime.engine_choice import build_asr


def tokenizer_bin(pieces: list[bytes]) -> bytes:
    out = bytearray()
    for piece in pieces:
        size = len(piece)
        out += bytes([size]) if size < 128 else bytes([size % 128 + 128, size // 128])
        out += piece
    return bytes(out)


def test_the_tokenizer_reads_both_length_forms_and_spells_text(tmp_path: Path) -> None:
    long_piece = "▁".encode() + b"x" * 200  # 203 bytes: a two-byte length
    pieces = [
        b"<unk>",
        b"<s>",
        b"</s>",
        "▁Hello".encode(),
        b",",
        "▁wor".encode(),
        b"ld",
        b"\xc3",
        b"\xa9",
        b"",
        long_piece,
    ]
    (tmp_path / "tokenizer.bin").write_bytes(tokenizer_bin(pieces))
    tokenizer = Tokenizer.load(tmp_path / "tokenizer.bin")
    assert tokenizer.pieces == pieces
    assert tokenizer.decode([1, 3, 4, 5, 6, 2]) == "Hello, world"  # control tokens left out, ▁ read as a space
    assert tokenizer.decode([5, 7, 8]) == "wor\u00e9"  # a character split over two byte tokens
    assert tokenizer.decode([10]) == "x" * 200
    assert tokenizer.decode([3, 99_999, 9]) == "Hello"  # ids past the table (the logits are wider) spell nothing


def test_a_truncated_tokenizer_file_is_refused_naming_the_package(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.bin").write_bytes(tokenizer_bin([b"<unk>", b"abc"])[:-1])
    with pytest.raises(EngineUnavailableError, match="truncated; reinstall moonshine-cpp"):
        Tokenizer.load(tmp_path / "tokenizer.bin")


def test_the_token_bound_grows_with_the_audio() -> None:
    assert max_new_tokens(0.0) == max_new_tokens(1.0) == MIN_TOKENS
    assert max_new_tokens(2.8) == 17 and max_new_tokens(20.0) == 120


def test_moonshine_is_selectable_and_its_window_is_checked() -> None:
    checked = build_asr(ASRConfig(engine="moonshine", threads=1, max_window_s=12))
    assert isinstance(checked, LanguageCheckedASR)  # English only: behind the language check
    asr = checked.recognizer
    assert isinstance(asr, MoonshineASR) and not asr.loaded  # built, nothing loaded
    assert isinstance(build_asr(ASRConfig(engine="moonshine", language_check=False)), MoonshineASR)
    assert (asr.cpu_threads, asr.max_window_s, asr.info.name) == (1, 12.0, "moonshine")
    with pytest.raises(ConfigError, match="max_window_s must be between 1 and 60"):
        build_asr(ASRConfig(engine="moonshine", max_window_s=0.5))
    with pytest.raises(ConfigError, match="'auto', 'moonshine', 'whisper' or 'funasr', not 'vosk'"):
        build_asr(ASRConfig(engine="vosk"))


def test_auto_picks_moonshine_where_its_package_is_installed_else_whisper(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ASRConfig().engine == "auto"
    auto = build_asr(ASRConfig(language_check=False))
    assert isinstance(auto, MoonshineASR)  # moonshine-cpp is installed on Linux x86_64 (pyproject)

    def not_installed() -> Path:
        raise EngineUnavailableError("Moonshine model not found: moonshine-cpp is not installed")

    monkeypatch.setattr("cosyagent.engines.moonshine_files.package_dir", not_installed)
    assert isinstance(build_asr(ASRConfig(language_check=False)), WhisperASR)
