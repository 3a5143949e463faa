"""kokoro-js's English voices through the public API: listed in /v1/health, spoken by
``/v1/audio/speech`` and by a Realtime session, with the official openai SDK as the client.
The server here runs Kokoro (Piper is the default TTS)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from openai import AsyncOpenAI

from cosyagent.audio.pcm import pcm16_to_float, resample
from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect, said_to_its_end
from tests.support import word_error_rate

SENTENCE = "The weather is lovely today, so we will walk to the park after lunch."


@pytest.fixture(scope="module")
async def live_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """A Kokoro server for this module (it shadows conftest's default-config one)."""
    sections = {"tts": {"engine": "kokoro"}, "realtime": {"voice": "af_heart"}}
    async with in_process_server(write_config(tmp_path_factory.mktemp("kokoro-en"), sections)) as live:
        yield live


def sdk(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


async def test_health_lists_the_english_voices_beside_the_others(live_server: LiveServer) -> None:
    async with httpx.AsyncClient() as http:
        tts = (await http.get(f"{live_server.base_url}/health")).json()["engines"]["tts"]
    assert {"af_heart", "am_michael", "bf_emma", "bm_george", "jf_alpha", "jm_kumo"} <= set(tts["voices"])
    assert "voices_missing" not in tts


@pytest.mark.parametrize("voice", ["af_heart", "bm_george"])
async def test_speech_in_an_english_voice_is_intelligible(live_server: LiveServer, voice: str) -> None:
    response = await sdk(live_server).audio.speech.create(
        model="tts-1", voice=voice, input=SENTENCE, response_format="pcm"
    )
    audio = pcm16_to_float(response.content)
    assert audio.size / 24000 > 1.0
    heard = await live_server.runtime.asr.transcribe(resample(audio, 24000, 16000))
    assert word_error_rate(SENTENCE, heard.text) <= 0.3, (voice, heard.text)


async def test_a_realtime_session_speaks_with_af_heart(live_server: LiveServer) -> None:
    async with sdk(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer in one short sentence.",
                "audio": {"output": {"voice": "af_heart"}},
            }
        )
        updated = await collect(conn, Transcript(), until=lambda e: e.type in ("session.updated", "error"))
        (event,) = [r.event for r in updated.events if r.type in ("session.updated", "error")]
        assert event.type == "session.updated" and event.session.audio.output.voice == "af_heart", event
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
        )
        await conn.response.create()
        seen = await collect(conn, Transcript(), until="response.done", timeout=120)
    (done,) = seen.of_type("response.done")
    assert said_to_its_end(done.response)
    reply = seen.of_type("response.output_audio_transcript.done")[0].transcript
    audio = pcm16_to_float(seen.audio())
    assert audio.size / 24000 >= 0.3
    heard = await live_server.runtime.asr.transcribe(resample(audio, 24000, 16000))
    assert word_error_rate(reply, heard.text) <= 0.5, (reply, heard.text)  # a short reply: coarse WER
