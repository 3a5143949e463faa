"""Fun-ASR-Nano through the real funasr code path, on a tiny random-weight model of the real layout.

Runs in .venv-funasr (make test): funasr needs torch, which would change .venv. Asserts the
result's structure and that nothing is downloaded, not the words (the weights are random).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("funasr", reason="funasr runs in .venv-funasr (make test)")

from cosyagent.engines.base import EngineError, EngineUnavailableError, Transcript
from cosyagent.engines.funasr_asr import FunASRNano
from tests.engines.funasr_tiny import build_tiny_fun_asr_nano

CLIP = Path(__file__).resolve().parents[1] / "data" / "zh_asr_example.wav"  # real Mandarin speech


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_fun_asr_nano(tmp_path_factory.mktemp("Fun-ASR-Nano-2512"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any connection attempt (a hub download) is recorded and refused."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts


def _clip() -> np.ndarray:
    audio, rate = sf.read(CLIP, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != 16000:
        import soxr

        mono = soxr.resample(mono, rate, 16000)
    return np.asarray(mono[: 16000 * 4], dtype=np.float32)


async def test_loads_offline_and_transcribes_a_real_clip(tiny_model_dir: Path, no_network: list[object]) -> None:
    asr = FunASRNano(tiny_model_dir, device="auto", language="zh", hotwords=("开放时间",), max_new_tokens=16)
    asr.load()
    try:
        assert asr.loaded
        result = await asr.transcribe(_clip(), prompt="cosyagent")
        assert isinstance(result, Transcript) and isinstance(result.text, str)
        assert result.language == "zh" and result.duration_s == pytest.approx(4.0)
        assert len(result.segments) == 1 and result.segments[0].end_s == pytest.approx(4.0)
        empty = await asr.transcribe(np.zeros(0, dtype=np.float32))
        assert empty.text == ""
        with pytest.raises(EngineError, match="transcribes"):
            await asr.transcribe(_clip(), language="fr")
    finally:
        asr.close()
    assert no_network == []  # nothing was downloaded (or even tried)


def test_missing_model_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="does not exist"):
        FunASRNano(tmp_path / "absent").load()
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.yaml").write_text("model: FunASRNano\n")
    with pytest.raises(EngineUnavailableError, match=r"model\.pt"):
        FunASRNano(tmp_path / "partial").load()
