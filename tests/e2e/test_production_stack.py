"""The production engines selected by config, behind the same server and APIs.

Fun-ASR-Nano is the tiny random-weight model through the real funasr code; CosyVoice3
is fake_cosyvoice (upstream's API at ace7c47: its code and weights cannot run here); the
LLM is the real embedded llama.cpp server. Runs in .venv-funasr (make test).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("funasr", reason="funasr runs in .venv-funasr (make test)")

import yaml

from cosyagent.config import load_config
from cosyagent.pipeline.reply import AudioChunk, ReplyRequest, stream_reply
from cosyagent.runtime import Runtime
from tests.e2e.conftest import free_port, serve_in_process, until_idle
from tests.e2e.realtime_client import said_to_its_end
from tests.engines.funasr_tiny import build_tiny_fun_asr_nano
from tests.fakes.cosyvoice_support import PROMPT_TEXT, PROMPT_WAV, make_model_dir, use_fake_cosyvoice


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Runtime, str]]:
    use_fake_cosyvoice()
    root = tmp_path_factory.mktemp("production")
    config = {
        "server": {"data_dir": str(root / "data")},
        "realtime": {"voice": "default"},
        "asr": {"engine": "funasr", "model_dir": str(build_tiny_fun_asr_nano(root / "asr")), "device": "cpu"},
        "tts": {
            "engine": "cosyvoice",
            "model_dir": str(make_model_dir(root / "tts")),
            "prompt_wav": str(PROMPT_WAV),
            "prompt_text": PROMPT_TEXT,
        },
        "llm": {"engine": "embedded", "threads": 1},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    runtime = Runtime.from_config(load_config(root / "config.yaml", environ={}))
    async with serve_in_process(runtime, free_port()) as server:
        yield runtime, server.base_url


async def test_health_names_the_production_engines(stack: tuple[Runtime, str]) -> None:
    _, base = stack
    async with httpx.AsyncClient(timeout=60) as client:
        health = (await client.get(f"{base}/health")).json()
    assert health["engines"]["asr"]["engine"] == "fun-asr-nano" and health["engines"]["asr"]["loaded"]
    assert health["engines"]["tts"]["engine"] == "cosyvoice3" and "default" in health["engines"]["tts"]["voices"]


async def test_sessions_and_models_follow_the_production_engines(stack: tuple[Runtime, str]) -> None:
    runtime, base_url = stack
    config = runtime.session_defaults(None)
    assert config.transcription_model == "fun-asr-nano-2512"
    chinese = {"audio": {"input": {"transcription": {"language": "zh"}}}}
    assert config.updated(chinese, runtime.voice_exists).transcription_language == "zh"
    async with httpx.AsyncClient(timeout=30) as http:
        models = (await http.get(f"{base_url}/models")).json()
    ids = [m["id"] for m in models["data"]]
    assert "fun-asr-nano-2512" in ids and "fun-cosyvoice3-0.5b-2512" in ids and "kokoro-82m" not in ids


async def test_transcriptions_route_runs_fun_asr_nano(stack: tuple[Runtime, str]) -> None:
    _, base = stack
    wav = io.BytesIO()
    sf.write(wav, np.zeros(16000, dtype=np.float32) + 0.01, 16000, format="WAV")
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"{base}/audio/transcriptions",
            files={"file": ("clip.wav", wav.getvalue(), "audio/wav")},
            data={"model": "whisper-1", "response_format": "json"},
        )
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["text"], str)


async def test_speech_route_streams_cosyvoice_audio(stack: tuple[Runtime, str]) -> None:
    _, base = stack
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"{base}/audio/speech",
            json={
                "model": "tts-1",
                "input": "Hello from the production stack.",
                "voice": "default",
                "response_format": "pcm",
            },
        )
    assert response.status_code == 200, response.text
    assert len(response.content) > 24000  # more than half a second of 24 kHz 16-bit audio


async def test_speech_instructions_reach_cosyvoices_instruct_mode(stack: tuple[Runtime, str]) -> None:
    from cosyvoice.cli import model as fake_model  # fake_cosyvoice, put on the path by the fixture

    _, base = stack
    body = {"model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": "default", "response_format": "pcm"}
    prompts: dict[str, list[str]] = {}
    async with httpx.AsyncClient(timeout=120) as client:
        for label, extra in (("styled", {"instructions": "Speak cheerfully."}), ("plain", {})):
            fake_model.PROMPT_TEXTS.clear()
            response = await client.post(f"{base}/audio/speech", json={**body, **extra})
            assert response.status_code == 200, response.text
            prompts[label] = ["".join(chr(token) for token in tokens) for tokens in fake_model.PROMPT_TEXTS]
    assert prompts["styled"] and all("Speak cheerfully.<|endofprompt|>" in p for p in prompts["styled"])
    assert prompts["plain"] and not any("cheerfully" in p for p in prompts["plain"])


async def test_speech_route_sends_estimated_cosyvoice_timestamps_before_their_audio(
    stack: tuple[Runtime, str],
) -> None:
    _, base = stack
    text = "Hello from the production stack. Its words are timed by estimate, clause by clause."
    body = {"input": text, "voice": "default", "response_format": "pcm", "stream_format": "sse"}
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("POST", f"{base}/audio/speech", json={**body, "timestamps": ["word", "viseme"]}) as response,
    ):
        assert response.status_code == 200
        events = [json.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.audio.timestamps" and kinds[-1] == "speech.audio.done"
    assert kinds.count("speech.audio.timestamps") >= 2  # one per clause, between the deltas
    audio_ms, words, visemes = 0.0, [], []
    for event in events:
        if event["type"] == "speech.audio.delta":
            audio_ms += len(base64.b64decode(event["audio"])) / 2 / 24.0
        elif event["type"] == "speech.audio.timestamps":
            assert all(mark["start_ms"] >= audio_ms - 5 for mark in event["words"] + event["visemes"])
            words += event["words"]
            visemes += event["visemes"]
    assert [w["text"] for w in words] == [w.strip(",.") for w in text.split()]
    assert [w["start_ms"] for w in words] == sorted(w["start_ms"] for w in words)
    assert words[-1]["end_ms"] <= audio_ms and visemes[-1]["viseme"] == "sil"


async def test_pipeline_feeds_llm_tokens_into_cosyvoice(stack: tuple[Runtime, str]) -> None:
    runtime, _ = stack
    engines = runtime.session_engines()
    assert engines.tts.info.streams_text
    request = ReplyRequest(messages=[{"role": "user", "content": "When does it open?"}], voice="default")
    events = [e async for e in stream_reply(request, engines.llm, engines.tts)]
    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert audio and sum(e.samples.size for e in audio) > 0
    spoken = " ".join(e.clause for e in audio if e.clause)
    assert spoken.strip()  # the LLM's words, streamed into CosyVoice, came out as speech
    assert all(e.timings is None for e in audio)  # untimed unless asked

    timed_request = dataclasses.replace(request, timed=True)  # a session that asked for timestamps
    timed = [e async for e in stream_reply(timed_request, engines.llm, engines.tts) if isinstance(e, AudioChunk)]
    assert timed and all(e.timings is not None and e.timings.words for e in timed)  # one chunk per clause
    for chunk in timed:
        if chunk.timings is not None:
            duration_ms = 1000 * chunk.samples.size / engines.tts.sample_rate
            assert all(0 <= w.start_ms <= w.end_ms <= duration_ms for w in chunk.timings.words), (
                chunk.clause,
                duration_ms,
                chunk.timings.words,
            )


async def test_realtime_conversation_over_the_production_engines(stack: tuple[Runtime, str]) -> None:
    """The official SDK's realtime client: a text turn answered in CosyVoice audio."""
    from openai import AsyncOpenAI

    _, base_url = stack
    client = AsyncOpenAI(base_url=base_url, api_key="unused")
    async with client.realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "max_output_tokens": 30})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
        )
        await conn.response.create()
        audio_bytes, transcript = 0, ""
        async with asyncio.timeout(120):
            async for event in conn:
                if event.type == "response.output_audio.delta":
                    audio_bytes += len(event.delta) * 3 // 4
                elif event.type == "response.output_audio_transcript.done":
                    transcript = event.transcript
                elif event.type == "response.done":
                    assert said_to_its_end(event.response)
                    break
    assert audio_bytes > 24000  # > 0.5 s of 24 kHz pcm16
    assert transcript.strip()


async def test_a_speech_request_on_cosyvoices_own_slots_keeps_the_capacity_from_being_measured_again(
    stack: tuple[Runtime, str],
) -> None:
    """CosyVoice queues on slots of its own, not the CPU scheduler's lanes: a `/v1/audio/speech`
    request must still count as someone's work, or the capacity measured while it ran would time
    its synthesis as the measurement's turn."""
    runtime, base = stack
    body = {"model": "tts-1", "input": "A long answer, spoken while the server looks idle. " * 6, "voice": "default"}
    async with httpx.AsyncClient(timeout=120) as client:
        async with client.stream("POST", f"{base}/audio/speech", json={**body, "response_format": "pcm"}) as speech:
            await anext(speech.aiter_bytes())  # generating now
            assert runtime.tts.queue_depth >= 1
            assert not await runtime.capacity.measure_if_idle()  # busy: not measured
        measurements = runtime.capacity.measurements
        await until_idle(runtime)  # the closed request's slot frees within a chunk
        measuring = asyncio.create_task(runtime.capacity.measure_if_idle())
        await asyncio.sleep(0.05)  # the measurement has begun; a request arrives meanwhile
        meanwhile = {**body, "input": "Meanwhile.", "response_format": "pcm"}
        response = await client.post(f"{base}/audio/speech", json=meanwhile)
        assert response.status_code == 200
        assert not await measuring  # the request's synthesis ran during it: dropped
    assert runtime.capacity.measurements == measurements
