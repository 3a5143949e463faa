"""CosyVoice3 engine against fake_cosyvoice (the upstream API at ace7c47): bi-streaming, barge-in,
per-request state, cached speakers. Needs torch: runs in .venv-funasr (make test)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="CosyVoice needs torch: these tests run in .venv-funasr (make test)")

from cosyagent.agent.events import CancelResponse, Send
from cosyagent.engines.base import CancelToken, EngineError, EngineUnavailableError, OwnSlotsEngine
from cosyagent.engines.cosyvoice_tts import CosyVoiceTTS
from cosyagent.engines.scheduling import BACKGROUND_AHEAD_S, needed_by
from cosyagent.engines.timings import can_time_words
from cosyagent.engines.vad import SileroVAD
from cosyagent.engines.visemes import VISEME_NAMES
from cosyagent.pipeline.speak import speak
from cosyagent.pipeline.timestamps import SpeechTimings
from cosyagent.voices.cosyvoice_features import CosyVoiceVoiceFeatures
from cosyagent.voices.library import VoiceLibrary
from tests.fakes.cosyvoice_support import PROMPT_TEXT, PROMPT_WAV, make_model_dir, use_fake_cosyvoice

use_fake_cosyvoice()
from cosyvoice.cli import frontend as fake_frontend  # noqa: E402
from cosyvoice.cli import model as fake_model  # noqa: E402

CHUNK = 25 * fake_model.SAMPLES_PER_TOKEN  # token_hop_len speech tokens (the first chunk adds the prompt's padding)


def _engine(model_dir: Path, **kwargs: object) -> CosyVoiceTTS:
    tts = CosyVoiceTTS(model_dir, prompt_wav=PROMPT_WAV, prompt_text=PROMPT_TEXT, **kwargs)  # type: ignore[arg-type]
    tts.load()
    return tts


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model_dir(tmp_path / "Fun-CosyVoice3-0.5B-2512")


@pytest.fixture
def tts(model_dir: Path) -> CosyVoiceTTS:
    engine = _engine(model_dir)
    yield engine  # type: ignore[misc]
    engine.close()


def _llm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cosyvoice-llm-")]


async def _wait_idle(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (_llm_threads() or fake_model.STATS["llm_jobs_running"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def test_llm_tokens_reach_the_engine_before_the_reply_is_complete(tts: CosyVoiceTTS) -> None:
    first_audio = asyncio.Event()
    sent: list[str] = []

    async def llm() -> AsyncIterator[str]:
        for delta in ("Hello there, ", "this is the start ", "of a long reply"):
            sent.append(delta)
            yield delta
        await asyncio.wait_for(first_audio.wait(), 10)  # the rest only once audio has come out
        sent.append(" and its end.")
        yield " and its end."

    chunks = []
    async for chunk in tts.synthesize_stream(llm(), voice="default"):
        if not first_audio.is_set():
            assert len(sent) == 3, "audio came out before the LLM finished its reply"
            first_audio.set()
        chunks.append(chunk)
    assert len(sent) == 4
    assert CHUNK <= chunks[0].size < 2 * CHUNK and chunks[0].dtype == np.float32
    total_tokens = 2 * len("".join(sent))
    assert sum(c.size for c in chunks) == total_tokens * fake_model.SAMPLES_PER_TOKEN


async def test_barge_in_stops_generation_within_one_chunk(tts: CosyVoiceTTS) -> None:
    cancel = CancelToken()
    chunks = 0
    started = time.monotonic()
    async for _chunk in tts.synthesize("A long answer. " * 40, voice="default", cancel=cancel):
        chunks += 1
        if chunks == 1:
            tokens_at_cancel = fake_model.STATS["llm_tokens"]
            cancel.cancel()
    assert chunks == 1
    await _wait_idle()
    assert _llm_threads() == [] and fake_model.STATS["llm_jobs_running"] == 0
    # the LLM stopped at its next token: far fewer than the 1200 speech tokens the text needs
    assert fake_model.STATS["llm_tokens"] - tokens_at_cancel < 30
    assert time.monotonic() - started < 5
    inner = tts._model.model
    assert inner.tts_speech_token_dict == {} and inner.llm_end_dict == {} and inner.hift_cache_dict == {}


async def test_timed_synthesis_estimates_words_and_visemes_within_its_audio(tts: CosyVoiceTTS) -> None:
    text = "Hello there, this is a timed reply. 你好，世界。"
    plain = np.concatenate([c async for c in tts.synthesize(text, voice="default")])
    assert tts.info.times_words and can_time_words(tts)
    (timed,) = [c async for c in tts.synthesize_timed(text, voice="default")]  # all of the text's audio at once
    assert timed.audio.size == plain.size
    duration_ms = 1000 * timed.audio.size / tts.sample_rate
    texts = [w.text for w in timed.words]
    assert texts == ["Hello", "there", "this", "is", "a", "timed", "reply", "你", "好", "世", "界"]
    starts = [w.start_ms for w in timed.words]
    assert starts == sorted(starts) and all(w.start_ms <= w.end_ms for w in timed.words)
    # The fake's audio is a steady tone from the first sample to the last: the words fill it.
    assert starts[0] < 20 and duration_ms - 20 <= timed.words[-1].end_ms <= duration_ms
    assert all(p.end_ms <= duration_ms for p in timed.phonemes)
    visemes = SpeechTimings.of(timed).visemes
    assert {v.viseme for v in visemes} <= set(VISEME_NAMES) and len({v.viseme for v in visemes}) >= 6
    assert visemes[-1].viseme == "sil" and visemes[-1].start_ms <= duration_ms
    # The comma after "there" and the full stop after "reply" are short pauses (sil) between the words.
    assert any(v.viseme == "sil" and 0 < v.start_ms < timed.words[-1].start_ms for v in visemes)


async def test_timed_synthesis_cancelled_yields_nothing_and_stops(tts: CosyVoiceTTS) -> None:
    cancel = CancelToken()
    asyncio.get_running_loop().call_later(0.05, cancel.cancel)
    made = [c async for c in tts.synthesize_timed("A long answer. " * 40, voice="default", cancel=cancel)]
    assert made == []
    await _wait_idle()
    assert _llm_threads() == [] and fake_model.STATS["llm_jobs_running"] == 0


async def test_speak_asks_for_timings_clause_by_clause_and_barge_in_cuts_them(tts: CosyVoiceTTS) -> None:
    from tests.unit.test_realtime_core import append, only, speech_24k
    from tests.unit.test_timestamps_core import TIMESTAMPS, make_core, opt_in, start

    text = "The quick brown fox jumps over the lazy dog. Then it runs away into the forest, far from here."

    async def llm() -> AsyncIterator[str]:
        for word in text.split(" "):
            yield word + " "

    untimed = [c async for c in speak(tts, llm(), voice="default")]
    assert all(c.timings is None for c in untimed)  # streaming text: no timings unless asked
    timed = [c async for c in speak(tts, llm(), voice="default", timed=True)]
    clauses = [c.text for c in timed if c.text]
    assert len(clauses) >= 2 and " ".join(clauses) == text  # one synthesis per clause, each timed
    assert all(c.timings is not None and c.timings.words for c in timed)
    assert [w.text for c in timed if c.timings is not None for w in c.timings.words] == [
        w.strip(",.") for w in text.split()
    ]

    vad = SileroVAD()
    vad.load()
    core = make_core(vad, tts)  # type: ignore[arg-type]  # it reads the engine's sample rate
    opt_in(core, ["word", "viseme"])
    begun = start(core)
    for chunk in timed:
        core.response_audio(begun.response_id, chunk.samples, chunk.text, chunk.timings)
    popped = [core.pop_audio(begun.response_id) for _ in range(8)]
    sent = [a.event for actions in popped for a in actions if isinstance(a, Send)]
    sent_ms = 800.0  # eight pieces of 100 ms
    actions = append(core, speech_24k())  # the user talks over the reply
    only(actions, CancelResponse)
    assert TIMESTAMPS not in {a.event["type"] for a in actions if isinstance(a, Send)}
    words = [w for e in sent if e["type"] == TIMESTAMPS for w in e["words"]]
    assert words and all(w["start_ms"] < sent_ms for w in words)
    assert len(words) < sum(len(c.timings.words) for c in timed if c.timings is not None)
    assert core.pop_audio(begun.response_id) == []


async def test_closing_a_bistream_leaves_no_thread_waiting_for_text(tts: CosyVoiceTTS) -> None:
    async def llm() -> AsyncIterator[str]:
        yield "Some words to start with, enough for a chunk of audio"
        await asyncio.sleep(30)  # an LLM that stalls: the client disconnects meanwhile
        yield "never"

    stream = tts.synthesize_stream(llm(), voice="default")
    first = await asyncio.wait_for(anext(stream), 10)
    assert first.size >= CHUNK
    await stream.aclose()
    await _wait_idle()
    assert _llm_threads() == [] and fake_model.STATS["llm_jobs_running"] == 0


async def test_concurrent_requests_do_not_share_chunk_state(tts: CosyVoiceTTS) -> None:
    async def sizes(text: str) -> list[int]:
        return [c.size async for c in tts.synthesize(text, voice="default")]

    text_a, text_b = "One two three four five six seven eight nine ten.", "Eleven twelve thirteen fourteen fifteen."
    alone_a, alone_b = await sizes(text_a), await sizes(text_b)
    together_a, together_b = await asyncio.gather(sizes(text_a), sizes(text_b))
    assert (together_a, together_b) == (alone_a, alone_b)
    assert together_a[1] == 2 * CHUNK  # each request grows its own hop: 25 then 50 tokens
    assert fake_model.STATS["max_llm_jobs_running"] >= 2  # they really ran at the same time
    assert tts._model.model.token_hop_len == 25


async def test_concurrency_limit_queues_and_refuses_beyond_the_queue(model_dir: Path) -> None:
    engine = _engine(model_dir, max_concurrency=1, max_queue=1)
    try:
        first = engine.synthesize("A long answer. " * 10, voice="default")
        await anext(first)
        queued = asyncio.create_task(anext(engine.synthesize("Queued.", voice="default")))
        await asyncio.sleep(0.05)
        assert engine.queue_depth == 2 and not queued.done()
        with pytest.raises(EngineUnavailableError, match="busy"):
            await anext(engine.synthesize("Refused.", voice="default"))
        await first.aclose()
        assert (await asyncio.wait_for(queued, 10)).size > 0
    finally:
        engine.close()


async def test_requests_are_counted_as_work_for_someone_unless_the_server_times_itself(tts: CosyVoiceTTS) -> None:
    """CosyVoice runs on slots of its own, not the CPU scheduler's lanes: the capacity meter reads
    these counts to tell an idle server from one serving a request (see Runtime._others_work)."""
    assert isinstance(tts, OwnSlotsEngine) and tts.queue_depth == 0
    started = tts.foreground_jobs_started
    stream = tts.synthesize("Someone asked for this.", voice="default")
    await anext(stream)
    assert tts.queue_depth == 1 and tts.foreground_jobs_started == started + 1
    await stream.aclose()
    with needed_by(lambda: time.monotonic() + BACKGROUND_AHEAD_S + 60):  # the capacity meter's jobs
        chunks = [c async for c in tts.synthesize("The server times itself.", voice="default")]
    assert chunks and tts.foreground_jobs_started == started + 1
    deadline = time.monotonic() + 5  # a closed request's worker ends within a chunk, then frees its slot
    while tts.queue_depth and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert tts.queue_depth == 0


async def test_cached_speakers_skip_prompt_extraction_and_a_restart_preloads_them(
    model_dir: Path, tmp_path: Path
) -> None:
    import soundfile as sf

    before = fake_frontend.STATS["prompt_extractions"]
    engine = _engine(model_dir)
    assert fake_frontend.STATS["prompt_extractions"] == before + 1  # the prompt voice, once
    assert (model_dir / "spk2info.pt").is_file()  # saved with save_spkinfo
    library = VoiceLibrary(tmp_path / "voices", CosyVoiceVoiceFeatures(engine))
    library.open()
    audio, rate = sf.read(PROMPT_WAV, dtype="float32")
    voice = library.create_clip("Dublin", audio, rate, "How far is it to Dublin?", "given")
    assert voice.usable and fake_frontend.STATS["prompt_extractions"] == before + 2
    for name in ("default", voice.id):
        chunks = [c async for c in library_speech(engine, library, name)]
        assert chunks
    assert fake_frontend.STATS["prompt_extractions"] == before + 2  # requests never extract
    engine.close()

    restarted = _engine(model_dir)  # spk2info.pt has the prompt voice: nothing to extract
    library = VoiceLibrary(tmp_path / "voices", CosyVoiceVoiceFeatures(restarted))
    assert library.open() == [voice.id] and library.features_computed == 0
    assert [c async for c in library_speech(restarted, library, voice.id)]
    assert fake_frontend.STATS["prompt_extractions"] == before + 2
    restarted.close()


def library_speech(engine: CosyVoiceTTS, library: VoiceLibrary, voice: str) -> AsyncIterator[np.ndarray]:
    from cosyagent.voices.synthesizer import LibrarySynthesizer

    return LibrarySynthesizer(engine, library).synthesize("Speak now.", voice=voice)  # type: ignore[return-value]


async def test_instruct_speed_and_errors(tts: CosyVoiceTTS, tmp_path: Path) -> None:
    slow = [c async for c in tts.synthesize("Slowly.", voice="default", speed=0.5, instruct="Speak slowly.")]
    assert len(slow) == 1  # speed != 1: upstream's vocoder cannot stream it, one chunk
    with pytest.raises(EngineError, match="unknown voice"):
        await anext(tts.synthesize("Hi.", voice="nobody"))
    with pytest.raises(EngineError, match="speed"):
        await anext(tts.synthesize("Hi.", voice="default", speed=3.0))
    with pytest.raises(EngineUnavailableError, match="does not exist"):
        CosyVoiceTTS(tmp_path / "absent").load()
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "cosyvoice3.yaml").write_text("")
    with pytest.raises(EngineUnavailableError, match=r"missing \['llm.pt'"):
        CosyVoiceTTS(partial).load()
