"""The selectable embedded engines end to end: Kokoro (`tts.engine: kokoro`, voice af_heart) and
SmolLM2-135M (`llm.embedded_model: smollm2`), the defaults until Piper and Qwen2.5-Coder-0.5B
measured better (docs/benchmarks.md), behind the same Realtime API, driven by the official openai SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from cosyagent.audio.pcm import pcm16_to_float, resample
from tests.alignment import normalized
from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect, said_to_its_end
from tests.support import word_error_rate


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    sections = {
        "tts": {"engine": "kokoro"},
        "llm": {"embedded_model": "smollm2"},
        "realtime": {"voice": "af_heart", "max_output_tokens": 40},
    }
    async with in_process_server(write_config(tmp_path_factory.mktemp("alt"), sections)) as live:
        yield live


async def test_a_question_is_answered_by_smollm2_in_a_kokoro_voice(server: LiveServer) -> None:
    health = server.runtime.health()
    assert {"jf_alpha", "jm_kumo"} <= set(health["engines"]["tts"]["voices"])
    assert health["engines"]["llm"]["model"].startswith("SmolLM2-135M")
    assert "kokoro-82m" in server.runtime.model_ids()
    client = AsyncOpenAI(base_url=server.base_url, api_key="unused")
    async with client.realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "Answer in one short sentence."})
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What is the capital of France?"}],
            }
        )
        await conn.response.create()
        seen = await collect(conn, Transcript(), until="response.done", timeout=120)
    (done,) = seen.of_type("response.done")
    assert said_to_its_end(done.response)
    reply = seen.of_type("response.output_audio_transcript.done")[0].transcript
    assert len(reply.split()) >= 2, reply  # SmolLM2's answers are weak: what it says is not checked
    audio = pcm16_to_float(seen.audio())  # Kokoro's 24 kHz, the session's pcm16 rate
    assert audio.size / 24000 >= 0.3
    heard = await server.runtime.asr.transcribe(resample(audio, 24000, 16000))
    # Intelligible: af_heart is an American English voice (jf_alpha's Japanese accent once made
    # Whisper hear "The capital over, Francis Parisa."); a short reply makes WER coarse, so the
    # bound is loose; a silent or garbled reply still fails it.
    assert word_error_rate(reply, heard.text) <= 0.5, (reply, heard.text)


async def test_kokoro_times_its_words_for_realtime_and_speech(server: LiveServer) -> None:
    """Kokoro's durations (its graph's exposed output) give the same timestamps events as Piper's."""
    client = AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    async with client.realtime.connect(model="cosyagent-realtime") as conn:
        output: Any = {"timestamps": ["word", "viseme"]}  # ours: not in the SDK's types
        brief = "Answer in one short sentence."
        await conn.session.update(session={"type": "realtime", "instructions": brief, "audio": {"output": output}})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
        )
        await conn.response.create()
        seen = await collect(conn, Transcript(), until="response.done", timeout=180)
    assert not seen.of_type("error")
    assert said_to_its_end(seen.of_type("response.done")[0].response)
    events = seen.of_type("response.output_audio_timestamps.delta")
    words = [w["text"] for e in events for w in e.words]
    transcript = seen.of_type("response.output_audio_transcript.done")[0].transcript
    # Compared without punctuation: SmolLM2 may answer "Sender: Jessica", timed as the word "Sender".
    assert words and [normalized(w) for w in words if normalized(w)] == [
        normalized(t) for t in transcript.split() if normalized(t)
    ], (words, transcript)
    assert {v["viseme"] for e in events for v in e.visemes} - {"sil"}
    speech = await client.audio.speech.with_raw_response.create(
        model="tts-1", input="Hello there.", voice="jf_alpha", stream_format="sse", extra_body=output
    )
    assert '"type":"speech.audio.timestamps"' in speech.text
