"""Test helpers for the CosyVoice3 engine: the fake package on sys.path and a model directory of the real layout."""

from __future__ import annotations

import sys
from pathlib import Path

from cosyagent.engines.cosyvoice_tts import REQUIRED_FILES

FAKE_ROOT = Path(__file__).resolve().parent / "fake_cosyvoice"
PROMPT_WAV = Path(__file__).resolve().parents[1] / "data" / "en_dublin_q.wav"
PROMPT_TEXT = "You are a helpful assistant.<|endofprompt|>How far is it to Dublin?"


def use_fake_cosyvoice() -> None:
    """Make ``import cosyvoice`` find the fake (tests only; the engine imports the upstream path)."""
    if str(FAKE_ROOT) not in sys.path:
        sys.path.insert(0, str(FAKE_ROOT))


def make_model_dir(directory: Path) -> Path:
    """The file names of Fun-CosyVoice3-0.5B-2512 (empty files: the fake only checks they exist)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED_FILES:
        (directory / name).write_bytes(b"")
    return directory
