"""Phone calls over Twilio Media Streams, against the real server and the real embedded models:
a Twilio-protocol client (tests/e2e/carrier_caller.py) on 127.0.0.1 plays a real 8 kHz speech
clip as the caller, in 20 ms μ-law frames at real time, plays the reply back on a clock of
its own (echoing our marks when their audio has "played", dropping the rest on a clear, as
Twilio does), and Whisper listens to what it heard."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from typing import Any

import pytest

from cosyagent.audio.pcm import resample
from tests.e2e.carrier_caller import Wire, answer_after, call, wait_until_released
from tests.e2e.conftest import LiveServer, configured
from tests.support import dublin_question_alone

FRAME = 160  # 20 ms of μ-law at 8 kHz
SID = "MZtest"


def twilio_media(payload: str, chunk: int) -> dict[str, Any]:
    media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20), "payload": payload}
    return {"event": "media", "streamSid": SID, "media": media}


def twilio_mark_echo(data: dict[str, Any]) -> dict[str, Any] | None:
    return {"event": "mark", "streamSid": SID, "mark": data["mark"]} if data["event"] == "mark" else None


TWILIO = Wire(
    path="/v1/telephony/twilio/media",
    start={
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "callSid": "CAtest",
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    },
    codec="pcmu",
    rate=8000,
    frame_ms=20,
    media=twilio_media,
    mark_echo=twilio_mark_echo,
    clear_event="clear",
    stop={"event": "stop", "streamSid": SID, "stop": {"callSid": "CAtest"}},
    connected={"event": "connected", "protocol": "Call", "version": "1.0.0"},
)


async def test_a_phone_call_is_heard_and_answered(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = live_server.runtime.active_sessions
    async with call(live_server, TWILIO) as caller:
        # Bad input first: each is logged and ignored, and the call goes on.
        await caller.send(twilio_media(base64.b64encode(b"\xff" * FRAME).decode(), 0))  # before start
        await caller.start()
        for bad in ("{not json", json.dumps({"event": "media", "media": {"payload": "%%%"}})):
            await caller.send(bad)
        await caller.send({"event": "surprise", "surprise": {}})
        await caller.send({"event": "mark", "streamSid": SID, "mark": {"name": "nobody"}})
        await caller.send({"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "5"}})
        # The question alone: speech over the reply would clear it.
        await answer_after(caller, TWILIO.encode(dublin_question_alone(TWILIO.rate)))
    await wait_until_released(live_server, before)

    assert caller.first_media_at is not None, "no reply audio"
    assert caller.payload_sizes <= set(range(1, FRAME + 1)) and FRAME in caller.payload_sizes
    assert caller.marks_echoed >= 1
    assert not caller.clears
    reply = caller.reply()
    assert reply.size / 8000 >= 0.5
    heard = await live_server.runtime.asr.transcribe(resample(reply, 8000, 16000))
    assert re.findall(r"[A-Za-z]{2,}", heard.text), heard.text  # words, not noise (the reply's text is the LLM's)
    ignored = [r.getMessage() for r in caplog.records if "ignored a message" in r.getMessage()]
    for reason in ("before start", "not valid JSON", "not valid base64", "unknown event", "unknown name"):
        assert any(reason in line for line in ignored), (reason, ignored)
    assert not [r for r in caplog.records if "session error" in r.getMessage()]


async def test_speaking_over_the_reply_clears_it(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = live_server.runtime.active_sessions
    async with call(live_server, TWILIO) as caller:
        await caller.start()
        await caller.speak(TWILIO.clip("en_dublin_q.wav") + TWILIO.silence(0.5))
        deadline = time.monotonic() + 120
        while caller.first_media_at is None and time.monotonic() < deadline:
            await caller.speak(TWILIO.silence(0.1))
        assert caller.first_media_at is not None, "no reply audio"
        await caller.speak(TWILIO.silence(0.4))  # some of the reply plays, and its marks come back
        interrupted_at = time.monotonic()
        await caller.speak(TWILIO.clip("en_news_movement_8k.wav")[: 8000 * 3])
        await caller.speak(TWILIO.silence(1.0))
    await wait_until_released(live_server, before)

    assert caller.clears, "speaking over the reply did not clear it"
    # Sanity bound only (a shared 2-core CPU); latency is measured in benchmarks/.
    assert caller.clears[0] - interrupted_at < 3.0
    # The item was truncated to what the caller heard, and the session accepted it (no error event).
    assert [r for r in caplog.records if "truncated to the" in r.getMessage()]
    assert not [r for r in caplog.records if "session error" in r.getMessage()]


async def test_with_greet_phone_calls_the_agent_opens_the_call(live_server: LiveServer) -> None:
    """``realtime.greet_phone_calls``: the caller, silent, hears the agent's greeting; without it
    the line stays quiet until the caller speaks."""
    runtime, before = live_server.runtime, live_server.runtime.active_sessions
    async with call(live_server, TWILIO) as quiet:
        await quiet.start()
        await quiet.speak(TWILIO.silence(3.0))
    assert quiet.first_media_at is None, "the agent spoke first without greet_phone_calls"
    await wait_until_released(live_server, before)

    with configured(runtime, "realtime", greet_phone_calls=True):
        async with call(live_server, TWILIO) as caller:
            await caller.start()
            answered = time.monotonic()
            await answer_after(caller, b"", max_s=60)  # silence until the greeting has played out
    await wait_until_released(live_server, before)
    assert caller.first_media_at is not None, "no greeting"
    assert caller.first_media_at - answered < 20  # a bound on a hang, not a latency check
    heard = await runtime.asr.transcribe(resample(caller.reply(), 8000, 16000))
    words = set(re.findall(r"[a-z']+", heard.text.lower()))
    assert words & {"hello", "hi", "hey", "welcome", "greetings"}, heard.text
