"""Transcription sessions (live captions) with the official openai SDK on the real stack: real
speech in, each turn's words out while it is spoken and as it ends, and nothing answers: no response, the LLM never
asked (its llama-server slots take no task), over WebSocket (``?intent=transcription`` or
``session.update``) and WebRTC (the session part of the call's form)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect, stream_pcm24
from tests.e2e.webrtc_client import QUESTION_CLIP, accept_answer, dublin_question, loopback_candidates, make_offer
from tests.support import REFERENCES, read_clip, word_error_rate, words_heard

COMPLETED = "conversation.item.input_audio_transcription.completed"
# Two questions with a pause between them longer than the silence wait: two turns.
CLIPS = (QUESTION_CLIP, "en_wealth_tax_q.wav")
SPEECH = np.concatenate(  # each clip without the start of the speaker's next word at its end
    [dublin_question(24000), np.zeros(int(1.5 * 24000), np.float32), read_clip(CLIPS[1], 24000)[: int(3.5 * 24000)]]
)
DETECTION = {"type": "server_vad", "silence_duration_ms": 1000}  # the Dublin question pauses mid-way


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_candidates():
        yield


def client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key")


async def llm_tasks(live_server: LiveServer) -> dict[int, int]:
    return {int(slot["id"]): int(slot.get("id_task", -1)) for slot in await live_server.llama_slots()}


async def speak_two_questions(conn: AsyncRealtimeConnection) -> Transcript:
    """Make the session a transcription one (if it is not), speak the two questions in real
    time and read the events until both are transcribed, then a second more (time for a
    response, were one to come)."""
    await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": DETECTION}}})
    sender = asyncio.create_task(stream_pcm24(conn, SPEECH, trailing_silence_s=2.0))
    seen = Transcript()
    for _ in CLIPS:
        await collect(conn, seen, until=COMPLETED, timeout=60)
    await sender
    await asyncio.sleep(1.0)
    return seen


def assert_two_questions_captioned(seen: Transcript) -> None:
    completed = seen.of_type(COMPLETED)
    assert len(completed) == 2, [e.transcript for e in completed]
    for clip, event in zip(CLIPS, completed, strict=True):
        assert word_error_rate(REFERENCES[clip], event.transcript) <= 0.2, event.transcript
        deltas = [e.delta for e in seen.of_type(COMPLETED.replace("completed", "delta")) if e.item_id == event.item_id]
        told = "".join(deltas)  # all of it, unless a hearing while they talked was revised
        assert told == event.transcript or not event.transcript.startswith(told), (told, event.transcript)
    committed = [e.item_id for e in seen.of_type("input_audio_buffer.committed")]
    assert committed == [e.item_id for e in completed]
    assert not [r for r in seen.events if r.type.startswith("response.")]


async def test_live_captions_with_intent_transcription(live_server: LiveServer) -> None:
    before = await llm_tasks(live_server)
    async with client(live_server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        seen = await speak_two_questions(conn)
        await conn.response.create()
        await collect(conn, seen, until="error", timeout=10)

    (updated,) = seen.of_type("session.updated")
    assert updated.session.type == "transcription"
    assert updated.session.audio.input.turn_detection.silence_duration_ms == 1000
    (error,) = seen.of_type("error")
    assert error.error.code == "invalid_event" and "transcription session" in error.error.message
    assert_two_questions_captioned(seen)
    assert await llm_tasks(live_server) == before  # no reply, no reply read ahead, no draft read


async def test_captions_come_while_the_speaker_talks(live_server: LiveServer) -> None:
    # 8 s of a lecture without a pause: drafts of the words so far every 0.64 s of speech, each
    # telling the words it adds (the language named, so no draft waits for the language screen).
    lecture = read_clip("en_philosophy_22s.wav", 24000)[: 8 * 24000]
    english = {"transcription": {"language": "en"}, "turn_detection": DETECTION}
    async with client(live_server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": english}})
        sender = asyncio.create_task(stream_pcm24(conn, lecture, trailing_silence_s=2.0))
        seen = await collect(conn, Transcript(), until=COMPLETED, timeout=60)
        await sender
    (completed,) = seen.of_type(COMPLETED)
    stopped = seen.first("input_audio_buffer.speech_stopped").at
    deltas = [r for r in seen.events if r.type == COMPLETED.replace("completed", "delta")]
    assert {r.event.item_id for r in deltas} == {completed.item_id}
    while_talking = "".join(r.event.delta for r in deltas if r.at < stopped)
    assert len(while_talking.split()) >= 4, deltas  # words shown before the turn ended
    assert words_heard(while_talking, completed.transcript) >= 0.8, (while_talking, completed.transcript)
    # The turn's end tells the rest, unless a later hearing revised a word told (then only
    # `completed` has the final words).
    told = "".join(r.event.delta for r in deltas)
    assert told == completed.transcript or not completed.transcript.startswith(told), (told, completed.transcript)


async def test_a_session_update_makes_a_fresh_session_a_transcription_session(live_server: LiveServer) -> None:
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        seen = await speak_two_questions(conn)
        await conn.session.update(session={"type": "realtime"})  # too late: the conversation has begun
        await collect(conn, seen, until="error", timeout=10)
    (error,) = seen.of_type("error")
    assert error.error.param == "session.type" and "cannot change" in error.error.message
    assert_two_questions_captioned(seen)


async def test_the_transcription_prompt_reaches_the_recognizer(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whisper takes it as its prompt and Fun-ASR as hotwords; Moonshine (here) ignores it, so
    # what is checked is that the session hands it on with each turn's transcript.
    asr = live_server.runtime.asr
    prompts: list[str | None] = []
    transcribe = asr.transcribe

    async def recording(audio: Any, **kwargs: Any) -> Any:
        prompts.append(kwargs.get("prompt"))
        return await transcribe(audio, **kwargs)

    monkeypatch.setattr(asr, "transcribe", recording)
    named = {"language": "en", "prompt": "Dublin, Cork"}
    async with client(live_server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"transcription": named}}})
        sender = asyncio.create_task(stream_pcm24(conn, dublin_question(24000), trailing_silence_s=2.0))
        seen = await collect(conn, Transcript(), until=COMPLETED, timeout=60)
        await sender
    (updated,) = seen.of_type("session.updated")
    assert updated.session.audio.input.transcription.prompt == "Dublin, Cork"
    assert "Dublin, Cork" in prompts  # the turn's transcript (drafts go without it)
    assert word_error_rate(REFERENCES[QUESTION_CLIP], seen.of_type(COMPLETED)[0].transcript) <= 0.3


async def test_an_unknown_intent_is_refused_before_the_upgrade(live_server: LiveServer) -> None:
    url = f"ws://127.0.0.1:{live_server.port}/v1/realtime?intent=translation"
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer test-key"}):
            pass
    assert denied.value.response.status_code == 400
    error = json.loads(denied.value.response.body or b"{}")["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "intent") and "transcription" in error["message"]
    assert live_server.runtime.active_sessions == 0


async def test_a_webrtc_call_can_be_a_transcription_session(live_server: LiveServer) -> None:
    caller, offer = await make_offer()
    response = await client(live_server).realtime.calls.with_raw_response.create(
        sdp=offer,
        session={"type": "transcription", "audio": {"input": {"turn_detection": DETECTION}}},  # type: ignore[arg-type,typeddict-item]
    )
    assert response.status_code == 201, response.text
    caller.call_id = response.headers["location"].rsplit("/", 1)[-1]
    await accept_answer(caller, response.text)
    try:
        created = await caller.wait_for("session.created", timeout=20)
        assert created["session"]["type"] == "transcription"
        caller.microphone.say(dublin_question(48000))
        transcript = await caller.wait_for(COMPLETED, timeout=60)
        assert word_error_rate(REFERENCES[QUESTION_CLIP], transcript["transcript"]) <= 0.3, transcript
        await asyncio.sleep(1.5)  # time for a response, were one to come
        assert not [e for _, e in caller.events if e["type"].startswith(("response.", "output_audio_buffer."))]
    finally:
        await client(live_server).realtime.calls.hangup(caller.call_id)
        await caller.close()
