"""The latency benchmark's pipecat baseline, end to end: this exercises **pipecat** (its websocket
transport, protobuf serializer, Silero VAD, Smart Turn, WhisperSTTService, OpenAILLMService,
KokoroTTSService), not cosyagent's pipeline.

``benchmarks/baseline/pipecat_bot.py`` is spawned with the real embedded models and its own
llama.cpp server on 127.0.0.1; ``benchmarks/baseline/driver.py`` speaks two recorded questions to
it in real time, as the benchmark does, and must get both answered with sensible stage times.
Afterwards neither the bot nor its llama.cpp server may be left running.
"""

from __future__ import annotations

import asyncio

import httpx

from benchmarks.baseline.driver import run_session
from benchmarks.baseline.server import alive, spawned_baseline
from benchmarks.records import TURN_METRICS, Plan
from cosyagent.talk import load_clip
from tests.support import DATA

QUESTIONS = {"en_wealth_tax_q.wav": "wealth tax", "en_dublin_q.wav": "dublin"}
V2V_BOUND_MS = 45_000.0  # generous: the shared 2-core test machine is often busy


def test_stock_pipecat_pipeline_answers_two_turns() -> None:
    clips = [load_clip(str(DATA / name)) for name in QUESTIONS]
    plan = Plan(turns=2, barge_ins=0, timeout_s=60.0)
    with spawned_baseline() as (url, pid):
        llm_pid = httpx.get(f"{url}/health", timeout=5.0).json()["llm_pid"]
        assert alive(pid) and alive(llm_pid)
        record = asyncio.run(run_session(url, 0, clips, plan))

    assert not record.errors, record.errors
    assert [turn["clip"] for turn in record.turns] == list(QUESTIONS)
    for turn, expected in zip(record.turns, QUESTIONS.values(), strict=True):
        assert turn["ok"], turn
        assert set(TURN_METRICS) <= set(turn)
        v2v = turn["voice_to_voice_ms"]
        assert isinstance(v2v, float) and 0.0 < v2v < V2V_BOUND_MS, turn
        assert expected in " ".join(turn["user_transcripts"]).lower(), turn
        assert turn["reply_text"] and turn["reply_audio_s"] > 0.2, turn
        for key in ("llm_first_token_ms", "first_clause_ms", "tts_first_audio_ms"):
            assert turn[key] is not None and turn[key] >= 0.0, (key, turn)
        assert turn["first_clause_ms"] <= turn["tts_first_audio_ms"], turn
    assert not alive(pid), "the baseline bot outlived spawned_baseline()"
    assert not alive(llm_pid), "the baseline's llama.cpp server outlived its bot"
