"""Out-of-band responses, input_audio items and the idle timeout, driven by the official openai
SDK over a real socket.

The LLM is fake_chat_llm (a scripted OpenAI-compatible endpoint on 127.0.0.1 that records what
it is asked), so the tests can check the exact context each response was given; Whisper tiny.en,
Piper and Silero are the real engines. Every server event is validated against the SDK's models
by the autouse conformance fixture.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from tests.e2e.conftest import LiveServer, configured
from tests.e2e.realtime_client import Transcript, collect, stream_audio
from tests.e2e.test_realtime_tools import agent, connect, fake, fake_llm, say
from tests.fakes.fake_chat_llm import FakeChatLLM, Reply
from tests.support import pcm16, read_clip

__all__ = ["agent", "fake", "fake_llm"]  # the scripted LLM and the agent that uses it

TEXT_ONLY: Any = {"type": "realtime", "output_modalities": ["text"]}


async def next_error(conn: AsyncRealtimeConnection) -> Any:
    seen = await collect(conn, Transcript(), until="error", timeout=30)
    return seen.of_type("error")[0].error


async def test_an_out_of_band_classification_with_its_own_input_leaves_the_conversation_alone(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies += [Reply(text="Frustrated."), Reply(text="I am sorry about your flight.")]
    async with connect(agent) as conn:
        await conn.session.update(session=TEXT_ONLY)
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "id": "item_flight",
                "content": [{"type": "input_text", "text": "My flight was cancelled."}],
            }
        )
        await conn.response.create(
            response={
                "conversation": "none",
                "instructions": "Name the user's mood in one word.",
                "metadata": {"purpose": "mood"},
                "input": [
                    {"type": "item_reference", "id": "item_flight"},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Mood?"}]},
                ],
            }
        )
        band = await collect(conn, Transcript(), until="response.done", timeout=60)
        await conn.response.create()  # an ordinary reply: the classification is not in its context
        reply = await collect(conn, Transcript(), until="response.done", timeout=60)

    (done,) = band.of_type("response.done")
    assert done.response.status == "completed" and done.response.conversation_id is None
    assert done.response.metadata == {"purpose": "mood"}
    assert done.response.output[0].content[0].text == "Frustrated."
    assert band.of_type("response.created")[0].response.metadata == {"purpose": "mood"}
    joined = [r.event.item.id for r in band.events if r.type.startswith("conversation.item.")]
    assert set(joined) == {"item_flight"}  # the user's own item; the response's output never joined
    assert fake.requests[0]["messages"] == [
        {"role": "system", "content": "Name the user's mood in one word."},
        {"role": "user", "content": "My flight was cancelled."},
        {"role": "user", "content": "Mood?"},
    ]
    assert [m["content"] for m in fake.requests[1]["messages"][1:]] == ["My flight was cancelled."]
    assert reply.of_type("response.done")[0].response.conversation_id == "conv_default"


async def test_an_input_audio_item_is_transcribed_by_the_servers_asr_for_the_llm(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies += [Reply(text="Take the train.")]
    clip = base64.b64encode(pcm16(read_clip("en_dublin_q.wav", 24000))).decode()
    async with connect(agent) as conn:
        await conn.session.update(session=TEXT_ONLY)
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": clip}]}
        )
        await conn.response.create()  # waits for the transcript
        seen = await collect(conn, Transcript(), until="response.done", timeout=120)
    (completed,) = seen.of_type("conversation.item.input_audio_transcription.completed")
    assert "dublin" in completed.transcript.lower()
    done_item = next(e.item for e in seen.of_type("conversation.item.done") if e.item.id == completed.item_id)
    assert done_item.content[0].type == "input_audio" and done_item.content[0].transcript == completed.transcript
    assert fake.requests[0]["messages"][-1] == {"role": "user", "content": completed.transcript}


async def silent_past_the_idle_timeout(agent: LiveServer, fake: FakeChatLLM, session: Any) -> Transcript:
    """A reply to "Hi!", then 7 s of silence against idle_timeout_ms 5000: the events until the
    idle timeout's response is done."""
    detection = {"type": "server_vad", "idle_timeout_ms": 5000}
    async with connect(agent) as conn:
        await conn.session.update(session={**session, "audio": {"input": {"turn_detection": detection}}})
        await say(conn, "Hi!")
        await conn.response.create()
        await collect(conn, Transcript(), until="response.done", timeout=60)
        silence = pcm16(np.zeros(24000 * 7, dtype=np.float32))  # 7 s, sent faster than real time
        await stream_audio(conn, silence, 48.0, realtime=False)
        seen = await collect(conn, Transcript(), until="response.done", timeout=60)
    (triggered,) = seen.of_type("input_audio_buffer.timeout_triggered")
    assert 4900 <= triggered.audio_end_ms - triggered.audio_start_ms <= 5200
    (committed,) = seen.of_type("input_audio_buffer.committed")
    assert committed.item_id == triggered.item_id
    return seen


async def test_silence_past_the_idle_timeout_commits_and_the_agent_says_its_idle_message(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies.append(Reply(text="Hello there."))
    seen = await silent_past_the_idle_timeout(agent, fake, {"type": "realtime"})  # spoken
    (done,) = seen.of_type("response.done")
    assert done.response.status == "completed"
    assert done.response.output[0].content[0].transcript == "Are you still there?"  # realtime.idle_message
    assert seen.of_type("response.output_audio.delta")  # in the session's voice
    assert len(fake.requests) == 1  # the LLM was asked for the first reply only


async def test_without_an_idle_message_the_llm_writes_the_idle_timeout_s_prompt(
    agent: LiveServer, fake: FakeChatLLM
) -> None:
    fake.replies += [Reply(text="Hello there."), Reply(text="Shall we go on?")]
    with configured(agent.runtime, "realtime", idle_message=None):
        seen = await silent_past_the_idle_timeout(agent, fake, TEXT_ONLY)
    assert seen.of_type("response.done")[0].response.output[0].content[0].text == "Shall we go on?"
    assert len(fake.requests) == 2


async def test_bad_input_gets_precise_errors_and_the_session_goes_on(agent: LiveServer, fake: FakeChatLLM) -> None:
    fake.replies += [Reply(text="Still here.")]
    async with connect(agent) as conn:
        await conn.session.update(session=TEXT_ONLY)
        await conn.response.create(response={"input": [{"type": "item_reference", "id": "item_gone"}]})
        error = await next_error(conn)
        assert (error.code, error.param) == ("item_not_found", "response.input[0].id")
        await conn.response.create(response={"metadata": {"n": 1}})  # type: ignore[dict-item]
        error = await next_error(conn)
        assert (error.code, error.param) == ("invalid_value", "response.metadata.n")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "@@@"}]}
        )
        error = await next_error(conn)
        assert (error.code, error.param) == ("invalid_base64", "item.content[0].audio")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAEC"}]}
        )
        error = await next_error(conn)
        assert (error.code, error.param) == ("invalid_audio", "item.content[0].audio")
        detection: Any = {"type": "server_vad", "idle_timeout_ms": 60000}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}})
        error = await next_error(conn)
        assert error.param == "session.audio.input.turn_detection.idle_timeout_ms" and "5000-30000" in error.message
        await say(conn, "Are you there?")
        await conn.response.create()
        seen = await collect(conn, Transcript(), until="response.done", timeout=60)
    assert seen.of_type("response.done")[0].response.output[0].content[0].text == "Still here."
