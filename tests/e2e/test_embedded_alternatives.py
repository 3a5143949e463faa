"""The selectable embedded engines end to end: Piper (`tts.engine: piper`) and Qwen2.5-Coder-0.5B
(`llm.embedded_model`), behind the same Realtime API, driven by the official openai SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from cosyagent.audio.pcm import pcm16_to_float, resample
from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect
from tests.support import word_error_rate


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    sections = {
        "tts": {"engine": "piper"},
        "llm": {"embedded_model": "qwen2.5-coder-0.5b"},
        "realtime": {"voice": "joe", "max_output_tokens": 40},
    }
    async with in_process_server(write_config(tmp_path_factory.mktemp("alt"), sections)) as live:
        yield live


async def test_a_question_is_answered_by_qwen_in_piper_s_voice(server: LiveServer) -> None:
    health = server.runtime.health()
    assert health["engines"]["tts"]["voices"] == ["joe"]
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
    assert done.response.status == "completed"
    reply = seen.of_type("response.output_audio_transcript.done")[0].transcript
    assert "paris" in reply.lower(), reply
    audio = pcm16_to_float(seen.audio())  # Piper's 22.05 kHz, delivered as the session's pcm16 at 24 kHz
    assert audio.size / 24000 >= 0.3
    heard = await server.runtime.asr.transcribe(resample(audio, 24000, 16000))
    # Intelligible: the answer's words come back. A short reply makes WER coarse (Whisper once heard
    # "Paris is" as "parishes": 2 errors in 6 words), so the bound is looser than for long speech.
    # The reply may be the bare answer ("Paris."), so the word checked is the answer's.
    assert "paris" in heard.text.lower() and word_error_rate(reply, heard.text) <= 0.5, (reply, heard.text)
