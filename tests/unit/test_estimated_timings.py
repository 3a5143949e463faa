"""Estimated word times (the CosyVoice3 path), measured on real speech whose word times are known.

CosyVoice3's weights cannot run here, so the estimator is measured on a proxy: Piper speech, whose
true word times come from its own duration predictor (``synthesize_timed``). Only the audio and the
text go to the estimator; its word starts are compared with Piper's.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

import numpy as np
import pytest

from cosyagent.engines.estimated_timings import estimate_timings, find_speech, pinyin_sounds, spoken_words
from cosyagent.engines.piper_tts import PiperTTS
from cosyagent.engines.visemes import VISEME_NAMES
from cosyagent.pipeline.timestamps import SpeechTimings

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to bring your umbrella, because it might rain this afternoon.",
    "My favourite breakfast is toast with butter and a cup of strong coffee.",
    "Well, that depends: do you want the short answer, or the long one?",
    "I can help you book a table, check the weather, or set a reminder for tomorrow morning.",
    "Honestly, I think the second option is cheaper, faster and much easier to maintain.",
)


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperTTS]:
    engine = PiperTTS()
    engine.load()
    yield engine
    engine.close()


def test_words_are_the_written_ones_with_their_sounds_and_pauses() -> None:
    words = spoken_words("Hello, world. 你好，世界！OK?")
    assert [w.text for w in words] == ["Hello", "world", "你", "好", "世", "界", "OK"]
    assert [w.pause_after for w in words] == [1.0, 2.0, 0.0, 1.0, 0.0, 2.0, 2.0]
    assert "".join(words[0].sounds) == "həloʊ"  # espeak-ng, the phonemizer Piper ships
    assert pinyin_sounds("中") == ["ʂ", "o", "ŋ"] and pinyin_sounds("去") == ["ɕ", "y"]
    assert words[3].sounds == ("x", "a", "o")
    assert spoken_words("-- ...") == []


def test_speech_span_and_pauses_come_from_the_energy() -> None:
    rate = 24_000
    rng = np.random.default_rng(0)

    def noise(seconds: float) -> np.ndarray:
        return (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32)

    def quiet(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * rate), dtype=np.float32)

    audio = np.concatenate([quiet(0.2), noise(0.5), quiet(0.05), noise(0.3), quiet(0.3), noise(0.4), quiet(0.1)])
    speech = find_speech(audio, rate)
    assert abs(speech.start / rate - 0.2) < 0.011 and abs(speech.end / rate - 1.75) < 0.011
    ((start, end),) = speech.pauses  # the 50 ms dip is too short to be a pause
    assert abs(start / rate - 1.05) < 0.011 and abs(end / rate - 1.35) < 0.011
    # Two words either side of the pause; the comma is where it falls.
    timed = estimate_timings(audio, rate, "Good morning, everyone")
    assert [w.text for w in timed.words] == ["Good", "morning", "everyone"]
    assert abs(timed.words[0].start_ms - 200) < 11 and abs(timed.words[2].start_ms - 1350) < 11
    assert abs(timed.words[1].end_ms - 1050) < 11
    assert timed.words[2].end_ms <= 1000 * audio.size / rate


def test_silent_or_wordless_audio_gets_no_marks_past_its_end() -> None:
    silent = np.zeros(4800, dtype=np.float32)
    timed = estimate_timings(silent, 24_000, "Hello there")
    assert all(0 <= w.start_ms <= w.end_ms <= 200 for w in timed.words)
    assert estimate_timings(silent, 24_000, "...").words == ()
    text = "It opens at nine in the morning, and closes at five."
    for size in (5_760, 10_560, 14_400, 24_007):  # speech to the end: the last word ends there, not a float after
        tone = np.sin(np.arange(size) / 7.0).astype(np.float32)
        timed = estimate_timings(tone, 24_000, text)
        duration_ms = 1000 * size / 24_000
        assert duration_ms - 10 <= timed.words[-1].end_ms <= duration_ms
        assert all(p.end_ms <= duration_ms for p in timed.phonemes)


async def test_estimate_against_piper_durations(piper: PiperTTS) -> None:
    errors: list[float] = []
    for sentence in SENTENCES:
        chunks = [chunk async for chunk in piper.synthesize_timed(sentence, voice="joe")]
        audio = np.concatenate([chunk.audio for chunk in chunks])
        known: list[tuple[str, float]] = []
        offset = 0.0
        for chunk in chunks:
            known += [(w.text, offset + w.start_ms) for w in chunk.words]
            offset += 1000 * chunk.audio.size / piper.sample_rate
        estimated = estimate_timings(audio, piper.sample_rate, sentence)
        assert [w.text for w in estimated.words] == [text for text, _ in known]
        starts = [w.start_ms for w in estimated.words]
        assert starts == sorted(starts) and estimated.words[-1].end_ms <= offset
        visemes = SpeechTimings.of(estimated).visemes
        assert {v.viseme for v in visemes} <= set(VISEME_NAMES) and len({v.viseme for v in visemes}) >= 8
        assert visemes[-1].viseme == "sil"
        errors += [abs(w.start_ms - start) for w, (_, start) in zip(estimated.words, known, strict=True)]
    errors.sort()
    median, p90 = statistics.median(errors), errors[int(0.9 * len(errors))]
    print(f"estimated word starts vs Piper's: {len(errors)} words, median {median:.0f} ms, p90 {p90:.0f} ms")
    # The target for model timings is 80 / 150 ms; measured here: 30-50 and 110-130 ms (Piper's
    # synthesis is random), and on Kokoro's speech 52 and 155 ms (docs/timestamps.md).
    assert median <= 80 and p90 <= 200, (median, p90)
