"""A spoken turn's reply asks the LLM during the silence wait (``realtime.reply_ahead``), end to
end: the official openai SDK over a real socket speaks a real question, the agent's real VAD and
recognizer hear it, and fake_chat_llm (scripted, on 127.0.0.1) records when each request came.
With a 2 s silence wait the request comes well before the turn ends, and the reply is the
scripted answer to it; with ``reply_ahead: false`` it comes only once the wait has run out."""

from __future__ import annotations

from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect, spoken_reply
from tests.e2e.test_realtime_tools import fake_llm
from tests.fakes.fake_chat_llm import MODEL, FakeChatLLM, Reply
from tests.support import read_clip

__all__ = ["fake_llm"]  # fake_chat_llm on 127.0.0.1, one per module (test_realtime_tools)

SILENCE_WAIT_MS = 2000
ANSWER = "Take the train from Heuston."


async def agent(port: int, directory: Any, reply_ahead: bool) -> Any:
    llm = {"engine": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": MODEL}
    config = write_config(directory, {"llm": llm, "realtime": {"reply_ahead": reply_ahead}})
    return in_process_server(config)


async def spoken_turn(server: LiveServer) -> Transcript:
    """The question spoken in real time, then silence: what the client saw, as it arrived."""
    client = AsyncOpenAI(base_url=server.base_url, api_key="test-key")
    async with client.realtime.connect(model="cosyagent-realtime") as conn:
        detection = {"type": "server_vad", "silence_duration_ms": SILENCE_WAIT_MS}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}})
        await collect(conn, Transcript(), until="session.updated", timeout=10)
        clip = read_clip("en_dublin_q.wav", 24000)
        seen, _ = await spoken_reply(conn, clip, trailing_silence_s=SILENCE_WAIT_MS / 1000 + 1.0)
    return seen


@pytest.mark.parametrize("reply_ahead", [True, False])
async def test_the_reply_asks_the_llm_during_the_silence_wait(
    fake_llm: tuple[FakeChatLLM, int], tmp_path: Any, reply_ahead: bool
) -> None:
    fake, port = fake_llm
    fake.requests.clear()
    fake.arrived.clear()
    fake.replies[:] = [Reply(text=ANSWER)] * 4  # (a request dropped at an earlier pause takes one)
    async with await agent(port, tmp_path, reply_ahead) as server:
        seen = await spoken_turn(server)
    (done,) = seen.of_type("response.done")
    assert done.response.status == "completed"
    assert done.response.output[0].content[0].transcript == ANSWER
    (transcribed,) = seen.of_type("conversation.item.input_audio_transcription.completed")
    asked = fake.requests[-1]["messages"][-1]
    assert asked["role"] == "user" and asked["content"] == transcribed.transcript and "Dublin" in asked["content"]
    turn_ended = seen.first("input_audio_buffer.speech_stopped").at
    # The transcript is in ~0.3 s into the 2 s wait: the request comes over a second before the turn ends.
    if reply_ahead:
        assert fake.arrived[-1] < turn_ended - 0.5, (fake.arrived, turn_ended)
    else:  # only as the turn ends (the client hears of it a moment after the server decided)
        assert len(fake.requests) == 1 and fake.arrived[0] > turn_ended - 0.2, (fake.arrived, turn_ended)
