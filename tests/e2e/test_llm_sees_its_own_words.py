"""The LLM is shown its own words of a reply spoken to its end, not the spoken transcript.

The transcript drops what is not spoken (markup, line breaks); sending that back would differ
from what the LLM server has cached after the first line break, and the next turn would re-read
the whole reply before its first token (~0.3 s on 2 cores for a listed answer). The LLM is
fake_chat_llm (scripted, on 127.0.0.1); the client is the official openai SDK over a real socket;
Piper speaks the reply.
"""

from __future__ import annotations

from openai.resources.realtime.realtime import AsyncRealtimeConnection

from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect
from tests.e2e.test_realtime_tools import agent, connect, fake, fake_llm, say
from tests.fakes.fake_chat_llm import FakeChatLLM, Reply

__all__ = ["agent", "fake", "fake_llm"]  # the scripted LLM and the agent that uses it (test_realtime_tools)

WRITTEN = "Two ways:\n1. Take the **bus**.\n2. Walk."
SPOKEN = "Two ways: 1. Take the bus. 2. Walk."


async def reply_to(conn: AsyncRealtimeConnection, text: str) -> Transcript:
    await say(conn, text)
    await conn.response.create()
    return await collect(conn, Transcript(), until="response.done", timeout=60)


async def test_a_reply_spoken_to_its_end_goes_back_to_the_llm_as_it_wrote_it(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies += [Reply(text=WRITTEN), Reply(text="Enjoy Dublin."), Reply(text="Bye.")]
    async with connect(agent) as conn:
        first = await reply_to(conn, "How do I get there?")
        (done,) = first.of_type("response.done")
        assert done.response.status == "completed"
        assert done.response.output[0].content[0].transcript == SPOKEN  # the client sees what was said
        await reply_to(conn, "Thanks!")
        assert fake.requests[1]["messages"][-2:] == [
            {"role": "assistant", "content": WRITTEN},
            {"role": "user", "content": "Thanks!"},
        ]
        # The client cuts the reply short (it played one second): the LLM sees the words heard.
        truncate = {"type": "conversation.item.truncate", "item_id": done.response.output[0].id}
        await conn.send({**truncate, "content_index": 0, "audio_end_ms": 1000})
        await collect(conn, Transcript(), until="conversation.item.truncated", timeout=10)
        await reply_to(conn, "Bye!")
    shown = [m["content"] for m in fake.requests[2]["messages"] if m["role"] == "assistant"]
    assert shown[0] != WRITTEN and SPOKEN.startswith(shown[0]) and shown[0]
