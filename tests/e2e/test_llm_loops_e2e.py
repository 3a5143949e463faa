"""An LLM that loops: the reply ends at the third saying of a clause, spoken and as text, and the
LLM's stream is closed (pipeline/repetition.py), driven by the official openai SDK over a real socket.

The LLM is fake_chat_llm (a scripted OpenAI-compatible endpoint on 127.0.0.1 that counts the
streams a client closed before their end): the embedded model loops too rarely to call on (1 of
300 answers to "What do bees make?"). Piper, Whisper tiny.en and Silero are the real engines.
"""

from __future__ import annotations

from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect
from tests.e2e.test_realtime_tools import agent, connect, fake, fake_llm, say
from tests.fakes.fake_chat_llm import FakeChatLLM, Reply

__all__ = ["agent", "fake", "fake_llm"]  # the scripted LLM and the agent that uses it

# The loop as the embedded model once made it, then on for far longer than the guard lets it.
LOOP = "Bees make honey, " + "honey bees, " * 40 + "and that is all."


async def test_a_looping_reply_ends_at_its_third_saying_and_the_llm_stream_is_closed(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    for modality in ("audio", "text"):
        closed_before = fake.disconnected
        fake.replies.append(Reply(text=LOOP, delay_s=0.02))  # 80 pieces (the cap), ~1.6 s: closed long before
        async with connect(agent) as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": [modality]})
            await say(conn, "What do bees make?")
            await conn.response.create()
            seen = await collect(conn, Transcript(), until="response.done", timeout=120)
        (done,) = seen.of_type("response.done")
        assert done.response.status == "completed", done.response
        if modality == "audio":
            said = seen.of_type("response.output_audio_transcript.done")[0].transcript
            assert len(seen.audio()) > 0
        else:
            said = seen.of_type("response.output_text.done")[0].text
        assert said.strip() == "Bees make honey, honey bees, honey bees, honey bees,", modality
        assert fake.disconnected == closed_before + 1, modality  # the LLM's stream closed, not read to its end
