"""Kokoro-82M (int8 ONNX): English and Mandarin, cancellation, voice blends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from cosyagent.audio.pcm import resample
from cosyagent.engines.base import AudioF32, CancelToken, EngineError, SpeechSynthesizer, UnspeakableTextError
from cosyagent.engines.kokoro_text import Script, detect_script, split_text
from cosyagent.engines.kokoro_tts import KokoroTTS, limit_peak
from cosyagent.engines.whisper_asr import WhisperASR

VOICE = "jf_alpha"
ENGLISH = "Hello, this is a test of the speech synthesizer."
MANY_SENTENCES = (
    "The first sentence is short. The second one follows it. A third sentence comes next. "
    "And here is the fourth. The fifth ends the text."
)

Wer = Callable[[str, str], float]


@pytest.fixture(scope="module")
def tts() -> Iterator[KokoroTTS]:
    engine = KokoroTTS()
    engine.load()
    yield engine
    engine.close()


async def collect(tts: KokoroTTS, text: str, voice: str = VOICE, **kwargs: object) -> list[AudioF32]:
    return [chunk async for chunk in tts.synthesize(text, voice=voice, **kwargs)]  # type: ignore[arg-type]


def test_implements_protocol(tts: KokoroTTS) -> None:
    assert isinstance(tts, SpeechSynthesizer)
    assert tts.sample_rate == 24_000
    assert {"jf_alpha", "jm_kumo"} <= set(tts.voices())


async def test_english_round_trips_through_whisper(tts: KokoroTTS, asr: WhisperASR, wer: Wer) -> None:
    chunks = await collect(tts, ENGLISH)
    audio = np.concatenate(chunks)
    assert audio.dtype == np.float32
    assert len(audio) / tts.sample_rate >= 0.5
    assert float(np.max(np.abs(audio))) <= 0.95
    heard = await asr.transcribe(resample(audio, tts.sample_rate, asr.sample_rate))
    assert wer(ENGLISH, heard.text) <= 0.3, heard.text


async def test_mandarin_gives_audio(tts: KokoroTTS) -> None:
    chunks = await collect(tts, "你好，欢迎使用语音助手。")
    audio = np.concatenate(chunks)
    assert len(audio) / tts.sample_rate >= 0.5
    assert float(np.max(np.abs(audio))) <= 0.95


async def test_mandarin_with_latin_words_gives_audio(tts: KokoroTTS) -> None:
    chunks = await collect(tts, "我用iPhone打电话。")
    assert sum(len(c) for c in chunks) > 0


async def test_unknown_voice_names_the_available_ones(tts: KokoroTTS) -> None:
    with pytest.raises(EngineError, match="jf_alpha"):
        await collect(tts, ENGLISH, voice="af_nobody")


async def test_bad_speed_is_an_engine_error(tts: KokoroTTS) -> None:
    with pytest.raises(EngineError, match="speed"):
        await collect(tts, ENGLISH, speed=3.0)


@pytest.mark.parametrize("text", ["", "   \n\t", "...", " - "])
async def test_nothing_to_say_yields_nothing(tts: KokoroTTS, text: str) -> None:
    assert await collect(tts, text) == []


async def test_cancel_stops_within_one_chunk(tts: KokoroTTS) -> None:
    assert len(split_text(MANY_SENTENCES)) == 5
    token = CancelToken()
    chunks = 0
    async for _chunk in tts.synthesize(MANY_SENTENCES, voice=VOICE, cancel=token):
        chunks += 1
        if chunks == 1:
            token.cancel()
    assert 1 <= chunks <= 2  # the contract; this engine drops a piece finished after the cancel
    assert chunks == 1
    assert tts.queue_depth == 0


async def test_cancelled_before_the_call_yields_nothing(tts: KokoroTTS) -> None:
    token = CancelToken()
    token.cancel()
    assert await collect(tts, MANY_SENTENCES, cancel=token) == []


async def test_cancel_while_a_piece_is_made_drops_it(tts: KokoroTTS) -> None:
    token = CancelToken()
    consumer = asyncio.create_task(collect(tts, MANY_SENTENCES, cancel=token))
    await asyncio.sleep(0.05)  # the first sentence takes a few hundred ms
    token.cancel()
    assert await consumer == []
    assert tts.queue_depth == 0


async def test_japanese_is_refused_before_any_audio(tts: KokoroTTS) -> None:
    with pytest.raises(UnspeakableTextError, match="Japanese"):
        await collect(tts, "Hello there. こんにちは。")


async def test_closing_the_iterator_early_is_clean(tts: KokoroTTS) -> None:
    stream = tts.synthesize(MANY_SENTENCES, voice=VOICE)
    first = await anext(stream)
    assert first.size > 0
    await stream.aclose()
    assert tts.queue_depth == 0
    assert len(await collect(tts, "Still working.")) == 1


async def test_blend_voice(tts: KokoroTTS) -> None:
    weights = {"jf_alpha": 3.0, "jm_kumo": 1.0}
    blend = tts.blend_voice(weights)
    alpha = tts.blend_voice({"jf_alpha": 1.0})
    kumo = tts.blend_voice({"jm_kumo": 1.0})
    np.testing.assert_allclose(blend, 0.75 * alpha + 0.25 * kumo, rtol=1e-5, atol=1e-6)

    tts.add_voice("alpha_kumo", blend)
    assert "alpha_kumo" in tts.voices()
    audio = np.concatenate(await collect(tts, "This voice is a blend.", voice="alpha_kumo"))
    assert len(audio) / tts.sample_rate >= 0.5


def test_bad_blends_are_refused(tts: KokoroTTS) -> None:
    with pytest.raises(EngineError, match="available voices"):
        tts.blend_voice({"nobody": 1.0})
    with pytest.raises(EngineError):
        tts.blend_voice({"jf_alpha": -1.0, "jm_kumo": 2.0})
    with pytest.raises(EngineError):
        tts.blend_voice({})
    with pytest.raises(EngineError, match="shape"):
        tts.add_voice("flat", np.zeros(256, dtype=np.float32))


def test_limit_peak() -> None:
    loud = np.array([0.0, 1.0, -0.5], dtype=np.float32)
    out = limit_peak(loud)
    assert float(np.max(np.abs(out))) == pytest.approx(0.95)
    quiet = np.array([0.1, -0.2], dtype=np.float32)
    assert limit_peak(quiet) is quiet


def test_text_preparation() -> None:
    assert split_text("One. Two! Three? Four") == ["One.", "Two!", "Three?", "Four"]
    assert split_text("你好。今天天气很好！") == ["你好。", "今天天气很好！"]
    assert detect_script("Hello") is Script.ENGLISH
    assert detect_script("你好 world") is Script.MANDARIN
    with pytest.raises(ValueError, match="Japanese"):
        detect_script("こんにちは")
