"""/v1/realtime/calls end to end: an aiortc caller in this process, the real models, real speech.

Audio goes both ways on the peer connection (Opus); events on the oai-events data
channel. Candidates are 127.0.0.1 only (see ``loopback_candidates``); no STUN server.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from aiortc import RTCPeerConnection
from openai import AsyncOpenAI

from tests.e2e.conftest import LiveServer, configured
from tests.e2e.realtime_client import said_to_its_end
from tests.e2e.webrtc_client import (
    QUESTION_CLIP,
    Caller,
    accept_answer,
    dublin_question,
    loopback_candidates,
    make_offer,
)
from tests.support import REFERENCES, word_error_rate


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_candidates():
        yield


def sdk(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key")


@pytest.fixture
async def caller(live_server: LiveServer) -> AsyncIterator[Caller]:
    """A connected call made with openai-python's realtime.calls.create (the multipart form)."""
    client, offer = await make_offer()
    response = await sdk(live_server).realtime.calls.with_raw_response.create(
        sdp=offer,
        session={
            "type": "realtime",
            "instructions": "Answer in one short sentence.",
            "max_output_tokens": 24,  # short replies keep the test short (they are played in real time)
            "audio": {"output": {"voice": "joe"}},
        },
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/sdp")
    client.call_id = response.headers["location"].rsplit("/", 1)[-1]
    await accept_answer(client, response.text)
    await client.wait_for("session.created", timeout=20)
    try:
        yield client
    finally:
        await client.close()


async def wait_until(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def open_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"]


async def test_a_call_transcribes_real_speech_and_answers_on_the_audio_track(
    live_server: LiveServer, caller: Caller
) -> None:
    runtime = live_server.runtime
    created = caller.of_type("session.created")[0]["session"]
    assert created["audio"]["output"]["voice"] == "joe"
    assert created["instructions"] == "Answer in one short sentence."
    assert created["max_output_tokens"] == 24
    assert live_server.runtime.active_sessions == 1
    assert caller.microphone.dtx  # the answer asked for DTX: in silence a packet every 400 ms, as a browser's

    caller.microphone.say(dublin_question(48000))  # then the microphone is silent, as a real one would be
    transcript = await caller.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
    assert word_error_rate(REFERENCES[QUESTION_CLIP], transcript["transcript"]) <= 0.3, transcript
    started = await caller.wait_for("output_audio_buffer.started", timeout=60)
    done = await caller.wait_for("response.done", timeout=90)
    assert said_to_its_end(done["response"])
    assert started["response_id"] == done["response"]["id"]
    await caller.wait_for("output_audio_buffer.stopped", timeout=60)
    # The voice came on the media track, none of it as events on the data channel.
    started_at = caller.time_of("output_audio_buffer.started")
    assert caller.voiced_seconds(after=started_at) > 0.5
    first_voiced = next(f.at for f in caller.heard if f.rms > 0.01 and f.at >= started_at - 0.5)
    assert first_voiced - started_at < 1.0  # the track plays what it is given at once
    assert not caller.of_type("response.output_audio.delta")
    assert caller.of_type("response.output_audio_transcript.delta")
    kinds = [e["type"] for _, e in caller.events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")

    # Hanging up frees the call: no session, no task, no open peer connection, on either side.
    await sdk(live_server).realtime.calls.hangup(caller.call_id)
    assert runtime.active_sessions == 0
    await caller.close()
    await wait_until(lambda: not open_peer_connections())
    current = asyncio.current_task()
    await wait_until(lambda: {t for t in asyncio.all_tasks() if t is not current} <= caller.tasks_before)


async def test_talking_over_the_agent_cuts_its_voice_off(live_server: LiveServer, caller: Caller) -> None:
    speech = dublin_question(48000)
    caller.microphone.say(speech)
    started = await caller.wait_for("output_audio_buffer.started", timeout=90)
    caller.microphone.say(speech)  # barge in
    cleared = await caller.wait_for("output_audio_buffer.cleared", timeout=30)
    assert cleared["response_id"] == started["response_id"]
    done = await caller.wait_for(lambda e: e["type"] == "response.done", timeout=10)
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    cut_at = caller.time_of("output_audio_buffer.cleared")
    await asyncio.sleep(1.0)
    # Once cleared, only silence arrives (the next reply needs the new turn to end first).
    assert caller.voiced_seconds(after=cut_at + 0.3, before=cut_at + 1.0) == 0.0
    await caller.wait_for(lambda e: e["type"] == "response.done" and said_to_its_end(e["response"]), 90)


async def test_bad_data_channel_messages_get_error_events_and_the_call_goes_on(caller: Caller) -> None:
    caller.send("{this is not json")
    error = await caller.wait_for("error")
    assert error["error"]["code"] == "invalid_json"
    # Audio formats are the media tracks' business: a format in session.update is ignored.
    caller.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "still here?",
                "audio": {"output": {"format": {"type": "audio/pcmu"}}},
            },
        }
    )
    updated = (await caller.wait_for("session.updated"))["session"]
    assert updated["instructions"] == "still here?"
    assert updated["audio"]["output"]["format"]["type"] == "audio/pcm"
    caller.send({"type": "output_audio_buffer.clear"})  # nothing playing: accepted silently
    caller.send({"type": "conversation.item.delete", "item_id": "nope"})
    assert (await caller.wait_for(lambda e: e["type"] == "error" and e is not error))["error"][
        "code"
    ] == "item_not_found"


async def test_a_raw_sdp_offer_is_answered_and_the_peer_closing_ends_the_call(live_server: LiveServer) -> None:
    client, offer = await make_offer()
    try:
        async with httpx.AsyncClient(base_url=live_server.base_url) as http:
            response = await http.post("/realtime/calls", content=offer, headers={"Content-Type": "application/sdp"})
        assert response.status_code == 201, response.text
        call_id = response.headers["location"].rsplit("/", 1)[-1]
        assert response.headers["location"] == f"/v1/realtime/calls/{call_id}"
        assert call_id.startswith("rtc_") and live_server.runtime.active_sessions == 1
        candidates = [line for line in response.text.splitlines() if line.startswith("a=candidate")]
        assert candidates and all(" typ host" in line for line in candidates)  # no STUN/TURN configured
        await accept_answer(client, response.text)
        await client.wait_for("session.created", timeout=20)
    finally:
        await client.close()  # the peer goes away without a hangup request
    await wait_until(lambda: live_server.runtime.active_sessions == 0)
    await wait_until(lambda: not open_peer_connections())
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        gone = await http.post(f"/realtime/calls/{call_id}/hangup")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "call_not_found"


NO_AUDIO = "no_audio"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "reason"),
    [
        ("hello, server", "application/sdp", 400, "invalid_offer", "must start with 'v=0'"),
        ("", "application/sdp", 400, "invalid_offer", "empty"),
        (NO_AUDIO, "application/sdp", 400, "invalid_offer", "no audio section"),
        ("v=0\r\nm=audio x", "text/plain", 400, "invalid_offer", "could not be parsed"),
        ("v=0\r\n" + "a=x\r\n" * 20000, "application/sdp", 413, "offer_too_large", "over 65536 bytes"),
    ],
)
async def test_bad_offers_are_refused_with_the_reason(
    live_server: LiveServer, body: str, content_type: str, status: int, code: str, reason: str
) -> None:
    if body == NO_AUDIO:
        client, body = await make_offer(with_audio=False)
        await client.close()
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        response = await http.post("/realtime/calls", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and reason in error["message"], error
    assert live_server.runtime.active_sessions == 0


async def test_a_bad_session_part_gets_400(live_server: LiveServer) -> None:
    client, offer = await make_offer()
    await client.close()
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk(live_server).realtime.calls.create(
            sdp=offer, session={"type": "realtime", "audio": {"output": {"voice": "no-such-voice"}}}
        )
    assert "no-such-voice" in refused.value.message and refused.value.param == "session.audio.output.voice"
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        parts = {"sdp": (None, offer, "application/sdp"), "session": (None, "{not json", "application/json")}
        response = await http.post("/realtime/calls", files=parts)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_session"
    assert live_server.runtime.active_sessions == 0


async def test_the_call_limit_answers_503(live_server: LiveServer) -> None:
    runtime = live_server.runtime
    client, offer = await make_offer()
    try:
        with configured(runtime, "webrtc", max_calls=0):
            async with httpx.AsyncClient(base_url=live_server.base_url) as http:
                sdp = {"Content-Type": "application/sdp"}
                response = await http.post("/realtime/calls", content=offer, headers=sdp)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "call_limit"
        assert response.headers["retry-after"]
    finally:
        await client.close()
    assert runtime.active_sessions == 0


async def test_silence_after_the_reply_has_played_triggers_the_idle_timeout(caller: Caller) -> None:
    """idle_timeout_ms over a media track: the microphone carries silence (as a real one does), and
    5 s of it after the agent's voice has stopped playing starts a new response."""
    detection = {"type": "server_vad", "idle_timeout_ms": 5000}
    caller.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": detection}}}}
    )
    await caller.wait_for("session.updated", timeout=20)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
    caller.send({"type": "conversation.item.create", "item": item})
    caller.send({"type": "response.create"})
    first = await caller.wait_for("response.done", timeout=120)
    await caller.wait_for("output_audio_buffer.stopped", timeout=60)
    triggered = await caller.wait_for("input_audio_buffer.timeout_triggered", timeout=30)
    waited = caller.time_of("input_audio_buffer.timeout_triggered") - caller.time_of("output_audio_buffer.stopped")
    print(f"idle timeout fired {waited:.2f} s after the voice stopped")
    assert 4.5 <= waited <= 6.0, waited  # 5 s of microphone audio from the track's end of playback (5.01 s here)
    assert 4900 <= triggered["audio_end_ms"] - triggered["audio_start_ms"] <= 5300
    committed = await caller.wait_for("input_audio_buffer.committed", timeout=5)
    assert committed["item_id"] == triggered["item_id"]
    second = await caller.wait_for(
        lambda e: e["type"] == "response.done" and e["response"]["id"] != first["response"]["id"], timeout=120
    )
    assert said_to_its_end(second["response"])
