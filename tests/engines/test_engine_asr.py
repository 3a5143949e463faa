"""Whisper tiny.en (faster-whisper) on real English speech."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from cosyagent.engines.base import AudioF32, CancelToken, EngineCancelled, EngineError, SpeechRecognizer
from cosyagent.engines.whisper_asr import WhisperASR

WEALTH_TAX = "Who's going to implement a 4% global wealth tax?"
DUBLIN = "and says, how do I get to Dublin?"

Clip = Callable[[str], tuple[AudioF32, int]]
Wer = Callable[[str, str], float]


def test_implements_protocol(asr: WhisperASR) -> None:
    assert isinstance(asr, SpeechRecognizer)
    assert asr.sample_rate == 16_000
    assert tuple(asr.info.languages) == ("en",)


async def test_real_speech_word_error_rate(asr: WhisperASR, load_clip: Clip, wer: Wer) -> None:
    audio, rate = load_clip("en_wealth_tax_q.wav")
    assert rate == asr.sample_rate
    started = time.perf_counter()
    result = await asr.transcribe(audio, language="en")
    elapsed = time.perf_counter() - started
    assert wer(WEALTH_TAX, result.text) <= 0.15, result.text
    assert result.language == "en"
    assert result.duration_s == pytest.approx(3.8, abs=0.05)
    assert result.segments and result.segments[0].end_s > result.segments[0].start_s
    assert elapsed < 5.0


async def test_cancel_before_the_call_runs_nothing(
    asr: WhisperASR, load_clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio, _ = load_clip("en_wealth_tax_q.wav")
    calls: list[int] = []
    real_run = asr._run

    def counting_run(*args: object) -> object:
        calls.append(1)
        return real_run(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(asr, "_run", counting_run)
    token = CancelToken()
    token.cancel()
    started = time.perf_counter()
    with pytest.raises(EngineCancelled):
        await asr.transcribe(audio, cancel=token)
    assert calls == []
    assert time.perf_counter() - started < 0.2


@pytest.mark.parametrize("language", ["zh", "fr", "english", ""])
async def test_unsupported_language_is_an_engine_error(asr: WhisperASR, language: str) -> None:
    with pytest.raises(EngineError, match="en"):
        await asr.transcribe(np.zeros(16_000, dtype=np.float32), language=language)


async def test_english_with_a_region_is_accepted(asr: WhisperASR, load_clip: Clip, wer: Wer) -> None:
    audio, _ = load_clip("en_dublin_q.wav")
    result = await asr.transcribe(audio, language="en-US")
    assert wer(DUBLIN, result.text) <= 0.3, result.text


async def test_concurrent_calls_are_both_served(asr: WhisperASR, load_clip: Clip, wer: Wer) -> None:
    tax, _ = load_clip("en_wealth_tax_q.wav")
    dublin, _ = load_clip("en_dublin_q.wav")
    first, second = await asyncio.gather(asr.transcribe(tax), asr.transcribe(dublin))
    assert wer(WEALTH_TAX, first.text) <= 0.15, first.text
    assert wer(DUBLIN, second.text) <= 0.3, second.text
    assert asr.queue_depth == 0


async def test_empty_audio_gives_an_empty_transcript(asr: WhisperASR) -> None:
    result = await asr.transcribe(np.zeros(0, dtype=np.float32))
    assert result.text == "" and result.duration_s == 0.0


async def test_stereo_audio_is_refused(asr: WhisperASR) -> None:
    with pytest.raises(EngineError, match="mono"):
        await asr.transcribe(np.zeros((2, 16_000), dtype=np.float32))
