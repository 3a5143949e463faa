"""`cosyagent models`: list what is present, and fail fast with a clear message when offline."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from cosyagent.cli import main


def _closed_port() -> int:
    for port in range(8600, 8700):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port  # bound then released: nothing listens there
    raise RuntimeError("no free port in 8600-8699")


def test_download_fails_fast_and_clearly_when_the_hub_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(
        [
            "models",
            "download",
            "Fun-ASR-Nano-2512",
            "--dir",
            str(tmp_path),
            "--base-url",
            f"http://127.0.0.1:{_closed_port()}",
        ]
    )
    assert code == 1 and time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "cannot reach" in err and "offline" in err
    assert not (tmp_path / "Fun-ASR-Nano-2512" / "model.pt").exists()


def test_unknown_model_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "download", "nope", "--dir", str(tmp_path)]) == 1
    assert "unknown model" in capsys.readouterr().err


def test_list_shows_present_incomplete_and_absent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asr = tmp_path / "Fun-ASR-Nano-2512"
    (asr / "Qwen3-0.6B").mkdir(parents=True)
    for name in ("config.yaml", "model.pt", "Qwen3-0.6B/config.json"):
        (asr / name).write_text("x")
    (tmp_path / "Fun-CosyVoice3-0.5B-2512").mkdir()
    assert main(["models", "list", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "present" in lines[0] and str(asr) in lines[0]
    assert "incomplete" in lines[1] and "llm.pt" in lines[1]
