"""Kokoro with kokoro-js's English voices (installed by ``make install``): af_heart, the British
voices, the voice list, precise errors, and voices that are refused or absent."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cosyagent.audio.pcm import resample
from cosyagent.engines.base import AudioF32, EngineError
from cosyagent.engines.kokoro_text import Script
from cosyagent.engines.kokoro_tts import KokoroTTS
from cosyagent.engines.kokoro_voices import VOICE_SHA256, english_lang, voices_dir
from cosyagent.engines.whisper_asr import WhisperASR
from cosyagent.runtime.health import voices_missing

SENTENCE = "The weather is lovely today, so we will walk to the park after lunch."
Wer = Callable[[str, str], float]


@pytest.fixture(scope="module")
def tts() -> Iterator[KokoroTTS]:
    engine = KokoroTTS()
    engine.load()
    assert engine.missing_voices is None, engine.missing_voices  # make install puts them there
    yield engine
    engine.close()


@pytest.fixture
def tampered_voices(tmp_path: Path) -> Path:
    """A copy of the installed voices with one byte of bf_emma changed."""
    copy = tmp_path / "kokoro-js-1.2.1"
    shutil.copytree(voices_dir(), copy)
    path = copy / "bf_emma.bin"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))
    return copy


async def collect(tts: KokoroTTS, text: str, voice: str) -> AudioF32:
    chunks = [chunk async for chunk in tts.synthesize(text, voice=voice)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


async def heard(tts: KokoroTTS, asr: WhisperASR, audio: AudioF32) -> str:
    return (await asr.transcribe(resample(audio, tts.sample_rate, asr.sample_rate))).text


def test_the_voice_list_has_the_english_voices_and_keeps_the_others(tts: KokoroTTS) -> None:
    voices = set(tts.voices())
    assert set(VOICE_SHA256) <= voices
    assert {"af_heart", "am_michael", "bf_emma", "bm_george", "jf_alpha", "jm_kumo"} <= voices
    assert len(VOICE_SHA256) == 28
    assert tts.default_voice == "af_heart"


@pytest.mark.parametrize("voice", ["af_heart", "bf_emma", "jf_alpha"])
async def test_a_voice_speaks_a_sentence_whisper_understands(
    tts: KokoroTTS, asr: WhisperASR, wer: Wer, voice: str
) -> None:
    audio = await collect(tts, SENTENCE, voice)
    assert audio.size / tts.sample_rate >= 1.0
    assert float(np.max(np.abs(audio))) <= 0.95
    text = await heard(tts, asr, audio)
    assert wer(SENTENCE, text) <= 0.3, (voice, text)


async def test_british_voices_speak_british_english(tts: KokoroTTS) -> None:
    """bf_/bm_ voices get espeak's en-gb phonemes; the same style with en-us sounds different."""
    assert [english_lang(v) for v in ("bf_emma", "bm_george", "af_heart", "am_adam", "jf_alpha")] == [
        "en-gb",
        "en-gb",
        "en-us",
        "en-us",
        "en-us",
    ]
    text = "The water in the car was hot."
    spoken = await collect(tts, text, "bf_emma")
    style = tts.blend_voice({"bf_emma": 1.0})
    british = tts._create(text, style, 1.0, Script.ENGLISH, "en-gb")
    american = tts._create(text, style, 1.0, Script.ENGLISH, "en-us")
    assert np.array_equal(spoken, british)
    assert spoken.size != american.size or not np.allclose(spoken, american, atol=1e-3)


async def test_an_unknown_voice_gets_the_precise_error(tts: KokoroTTS) -> None:
    with pytest.raises(EngineError, match=r"unknown voice 'af_nobody'; available voices: .*af_heart.*jf_alpha"):
        await collect(tts, SENTENCE, "af_nobody")


async def test_a_tampered_voice_is_refused_and_the_others_still_speak(
    tampered_voices: Path, asr: WhisperASR, wer: Wer
) -> None:
    engine = KokoroTTS(english_voices_dir=tampered_voices)
    engine.load()
    try:
        reason = engine.missing_voices
        assert reason is not None and "bf_emma.bin fails its checksum" in reason and "kokoro-js@1.2.1" in reason
        assert "af_heart" not in engine.voices() and "jf_alpha" in engine.voices()
        assert engine.default_voice == "jf_alpha"
        health = voices_missing(engine)["voices_missing"]
        assert "af_heart" in health["voices"] and health["reason"] == reason
        with pytest.raises(EngineError, match=r"'af_heart' is one of Kokoro's English voices \(kokoro-js@1.2.1\)"):
            await collect(engine, SENTENCE, "af_heart")
        text = await heard(engine, asr, await collect(engine, SENTENCE, "jf_alpha"))
        assert wer(SENTENCE, text) <= 0.3, text
    finally:
        engine.close()


def test_absent_voices_say_how_to_get_them(tmp_path: Path) -> None:
    engine = KokoroTTS(english_voices_dir=tmp_path / "nowhere")
    try:
        assert engine._english_voices() == {}
        assert engine.missing_voices is not None
        assert "not installed" in engine.missing_voices and "make install" in engine.missing_voices
    finally:
        engine.close()
