"""Moonshine base-en (weights from moonshine-cpp, converted to ONNX) on real English speech."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cosyagent.engines import moonshine_asr
from cosyagent.engines.base import AudioF32, CancelToken, EngineCancelled, EngineError, SpeechRecognizer
from cosyagent.engines.base import EngineUnavailableError as Unavailable
from cosyagent.engines.moonshine_asr import MoonshineASR
from cosyagent.engines.moonshine_files import (
    SHA256,
    checked_sources,
    convert_ort_to_onnx,
    onnx_models,
    package_dir,
    quantize_decoder,
)
from tests.support import REFERENCES, read_clip, word_error_rate

Clip = Callable[[str], tuple[AudioF32, int]]


@pytest.fixture(scope="module")
def moonshine() -> Iterator[MoonshineASR]:
    engine = MoonshineASR()
    engine.load()
    yield engine
    engine.close()


def test_implements_protocol_without_importing_the_package(moonshine: MoonshineASR) -> None:
    assert isinstance(moonshine, SpeechRecognizer)
    assert moonshine.sample_rate == 16_000 and tuple(moonshine.info.languages) == ("en",)
    assert moonshine.info.model == "moonshine-base-en"
    assert "moonshine_cpp" not in sys.modules  # its import loads a library that needs AVX-512


async def test_word_error_rate_on_the_english_clips(moonshine: MoonshineASR) -> None:
    """Measured: 5 errors in 78 words (6.4%), the added words on the 8 kHz telephone clip."""
    errors = words = 0.0
    for name, reference in REFERENCES.items():
        result = await moonshine.transcribe(read_clip(name, 16_000), language="en")
        count = len(reference.split())
        rate = word_error_rate(reference, result.text)
        assert rate <= 0.35, (name, result.text)
        errors, words = errors + rate * count, words + count
    assert errors / words <= 0.15


async def test_a_short_question_is_fast_and_long_audio_is_cut_into_windows(moonshine: MoonshineASR) -> None:
    dublin = read_clip("en_dublin_q.wav", 16_000)
    started = time.perf_counter()
    result = await moonshine.transcribe(dublin)
    assert time.perf_counter() - started < 5.0  # a sanity bound only: the CPU is shared
    assert result.duration_s == pytest.approx(2.8, abs=0.05)
    assert [(s.start_s, s.end_s) for s in result.segments] == [(0.0, pytest.approx(2.8, abs=0.05))]
    long = await moonshine.transcribe(read_clip("en_philosophy_22s.wav", 16_000))  # 22.2 s: two windows
    assert len(long.segments) == 2 and long.segments[0].end_s == long.segments[1].start_s
    assert all(s.end_s - s.start_s <= moonshine.max_window_s and s.text for s in long.segments)
    assert long.segments[-1].end_s == pytest.approx(22.2, abs=0.05)


async def test_decoding_stops_at_the_token_bound(moonshine: MoonshineASR, monkeypatch: pytest.MonkeyPatch) -> None:
    audio = read_clip("en_wealth_tax_q.wav", 16_000)
    full = (await moonshine.transcribe(audio)).text
    assert moonshine_asr.max_new_tokens(3.8) == 23 and moonshine_asr.max_new_tokens(0.2) == moonshine_asr.MIN_TOKENS
    monkeypatch.setattr(moonshine_asr, "MIN_TOKENS", 1)
    monkeypatch.setattr(moonshine_asr, "TOKENS_PER_SECOND", 0.5)  # 3.8 s -> 2 tokens
    bounded = (await moonshine.transcribe(audio)).text
    assert bounded and full.startswith(bounded) and len(bounded.split()) <= 2 < len(full.split()), (bounded, full)


async def test_cancel_before_the_call_runs_nothing(moonshine: MoonshineASR) -> None:
    token = CancelToken()
    token.cancel()
    started = time.perf_counter()
    with pytest.raises(EngineCancelled):
        await moonshine.transcribe(read_clip("en_dublin_q.wav", 16_000), cancel=token)
    assert time.perf_counter() - started < 0.2


async def test_cancel_stops_a_running_decode(moonshine: MoonshineASR, capfd: pytest.CaptureFixture[str]) -> None:
    audio = read_clip("en_lecture_60s.wav", 16_000)  # three windows: seconds of work
    token = CancelToken()
    job = asyncio.create_task(moonshine.transcribe(audio, cancel=token))
    await asyncio.sleep(0.5)
    token.cancel()
    cancelled_at = time.perf_counter()
    with pytest.raises(EngineCancelled):
        await job
    assert time.perf_counter() - cancelled_at < 2.0  # the whole decode takes several times longer
    # a run we stopped is no error: onnxruntime must not print one (its C++ log writes to fd 2)
    assert "terminate flag" not in capfd.readouterr().err
    after = await moonshine.transcribe(read_clip("en_dublin_q.wav", 16_000))  # the engine still works
    assert "dublin" in after.text.lower()


@pytest.mark.parametrize("language", ["zh", "fr", "english", ""])
async def test_unsupported_language_is_an_engine_error(moonshine: MoonshineASR, language: str) -> None:
    with pytest.raises(EngineError, match="en"):
        await moonshine.transcribe(np.zeros(16_000, dtype=np.float32), language=language)


async def test_odd_inputs(moonshine: MoonshineASR) -> None:
    assert (await moonshine.transcribe(np.zeros(0, dtype=np.float32))).text == ""
    tiny = await moonshine.transcribe(np.zeros(480, dtype=np.float32), language="en-US")  # 30 ms: padded
    assert tiny.duration_s == pytest.approx(0.03)
    with pytest.raises(EngineError, match="mono"):
        await moonshine.transcribe(np.zeros((2, 16_000), dtype=np.float32))


def test_a_missing_or_altered_file_names_the_package(tmp_path: Path) -> None:
    for name in SHA256:
        (tmp_path / name).symlink_to(package_dir() / name)
    assert set(checked_sources(tmp_path)) == set(SHA256)
    (tmp_path / "tokenizer.bin").unlink()
    (tmp_path / "tokenizer.bin").write_bytes(b"\x03abc")
    with pytest.raises(Unavailable, match=r"tokenizer.bin fails its checksum .*reinstall moonshine-cpp==0.1.4"):
        checked_sources(tmp_path)
    (tmp_path / "encoder_model.ort").unlink()
    with pytest.raises(Unavailable, match=r"encoder_model.ort is missing; reinstall moonshine-cpp"):
        MoonshineASR(model_dir=tmp_path, cache_dir=tmp_path / "cache").load()


def test_the_conversion_is_deterministic(tmp_path: Path) -> None:
    source = package_dir() / "encoder_model.ort"
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    convert_ort_to_onnx(source, first)
    convert_ort_to_onnx(source, second)
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temporary files left


def test_the_decoder_is_quantized_deterministically(tmp_path: Path) -> None:
    import onnx

    decoder = onnx_models(cache=tmp_path).decoder
    (converted,) = (p for p in tmp_path.iterdir() if p.name.startswith("decoder_") and p != decoder)
    again = tmp_path / "again.onnx"
    quantize_decoder(converted, again)
    assert decoder.name.endswith(".u8.onnx") and decoder.read_bytes() == again.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    operators: list[str] = []
    graphs = [onnx.load(decoder).graph]
    while graphs:  # the layers are inside the merged decoder's If branches
        graph = graphs.pop()
        operators += [node.op_type for node in graph.node]
        graphs += [a.g for node in graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    assert operators.count("MatMulInteger") >= 100  # every weight MatMul of both branches (146)
