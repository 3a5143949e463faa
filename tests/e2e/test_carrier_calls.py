"""Phone calls over Telnyx (G.722), Exotel (16-bit PCM at 8 kHz) and Plivo (μ-law) media
streams, against the real server and the real embedded models: a client in each carrier's
message shapes (tests/e2e/carrier_caller.py) on 127.0.0.1 plays a real speech clip as the
caller at real time, echoes our marks/checkpoints as its audio "plays", and Whisper listens
to the reply decoded from the carrier's codec: words come back only if the reply really is
in that codec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

import pytest
import websockets

from cosyagent.audio.pcm import resample
from tests.e2e.carrier_caller import CarrierCaller, Wire, answer_after, call, wait_until_released
from tests.e2e.conftest import LiveServer
from tests.support import dublin_question_alone

TELNYX_STREAM = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
EXOTEL_STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
PLIVO_STREAM = "87654321-4321-4321-4321-cba987654321"


def _media(stream_key: str, stream: str, track: str | None) -> Any:
    def media(payload: str, chunk: int) -> dict[str, Any]:
        body: dict[str, Any] = {"chunk": str(chunk), "timestamp": str(chunk * 20), "payload": payload}
        if track:
            body["track"] = track
        return {"event": "media", "sequence_number": str(chunk + 1), stream_key: stream, "media": body}

    return media


def _mark_echo(stream_key: str, stream: str) -> Any:
    def echo(data: dict[str, Any]) -> dict[str, Any] | None:
        return {"event": "mark", stream_key: stream, "mark": data["mark"]} if data["event"] == "mark" else None

    return echo


def _plivo_echo(data: dict[str, Any]) -> dict[str, Any] | None:
    if data["event"] != "checkpoint":
        return None
    return {"event": "playedStream", "streamId": PLIVO_STREAM, "name": data["name"]}


TELNYX = Wire(
    path="/v1/telephony/telnyx/media",
    start={
        "event": "start",
        "sequence_number": "1",
        "stream_id": TELNYX_STREAM,
        "start": {
            "call_control_id": "v3:test-call",
            "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
            "from": "+13122010094",
            "to": "+13122123456",
            "custom_parameters": {},
            "media_format": {"encoding": "G722", "sample_rate": 16000, "channels": 1},
        },
    },
    codec="g722",
    rate=16000,
    frame_ms=20,
    media=_media("stream_id", TELNYX_STREAM, "inbound"),
    mark_echo=_mark_echo("stream_id", TELNYX_STREAM),
    clear_event="clear",
    stop={"event": "stop", "sequence_number": "999", "stream_id": TELNYX_STREAM, "stop": {}},
)
EXOTEL = Wire(
    path="/v1/telephony/exotel/media",
    start={
        "event": "start",
        "sequence_number": "1",
        "stream_sid": EXOTEL_STREAM,
        "start": {
            "stream_sid": EXOTEL_STREAM,
            "call_sid": "CAtest",
            "account_sid": "ACtest",
            "from": "+919876543210",
            "to": "+918047491899",
            "custom_parameters": {},
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
        },
    },
    codec="l16-le",
    rate=8000,
    frame_ms=100,  # Exotel sends about 100 ms a message
    media=_media("stream_sid", EXOTEL_STREAM, None),
    mark_echo=_mark_echo("stream_sid", EXOTEL_STREAM),
    clear_event="clear",
    stop={"event": "stop", "stream_sid": EXOTEL_STREAM, "stop": {"call_sid": "CAtest", "reason": "callended"}},
    connected={"event": "connected"},
)
PLIVO = Wire(
    path="/v1/telephony/plivo/media",
    start={
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "12345678-1234-1234-1234-123456789abc",
            "streamId": PLIVO_STREAM,
            "accountId": "MAXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "userId=12345",
    },
    codec="pcmu",
    rate=8000,
    frame_ms=20,
    media=_media("streamId", PLIVO_STREAM, "inbound"),
    mark_echo=_plivo_echo,
    clear_event="clearAudio",
    stop=None,  # Plivo sends no stop: the socket closes
    connected=None,
    echoes_cleared_marks=False,
)


async def a_call_with_bad_input(server: LiveServer, wire: Wire, caplog: pytest.LogCaptureFixture) -> CarrierCaller:
    """Malformed messages first (each logged and ignored), a key press, then the question."""
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = server.runtime.active_sessions
    async with call(server, wire) as caller:
        await caller.start()
        await caller.send("{not json")
        await caller.send(json.dumps({"event": "media", "media": {"track": "inbound", "payload": "%%%"}}))
        await caller.send({"event": "surprise"})
        await caller.send({"event": "dtmf", "dtmf": {"digit": "5"}})
        await answer_after(caller, wire.encode(dublin_question_alone(wire.rate)))
    await wait_until_released(server, before)
    ignored = [r.getMessage() for r in caplog.records if "ignored a message" in r.getMessage()]
    for reason in ("not valid JSON", "not valid base64", "unknown event"):
        assert any(reason in line for line in ignored), (reason, ignored)
    assert [r for r in caplog.records if ": key 5" in r.getMessage()]
    assert not [r for r in caplog.records if "session error" in r.getMessage()]
    return caller


async def the_reply_has_words(server: LiveServer, caller: CarrierCaller) -> None:
    assert caller.first_media_at is not None, "no reply audio"
    assert caller.marks_echoed >= 1
    frame = caller.wire.frame_bytes * 20 // caller.wire.frame_ms  # we send whole 20 ms frames
    assert all(size % frame == 0 for size in caller.payload_sizes), caller.payload_sizes
    reply = caller.reply()
    assert reply.size / caller.wire.rate >= 0.5
    heard = await server.runtime.asr.transcribe(resample(reply, caller.wire.rate, 16000))
    assert re.findall(r"[A-Za-z]{2,}", heard.text), heard.text  # words, not noise (the reply's text is the LLM's)


async def test_a_telnyx_call_in_g722_is_answered(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caller = await a_call_with_bad_input(live_server, TELNYX, caplog)
    await the_reply_has_words(live_server, caller)
    assert all(set(m) == {"event", "media"} for m in caller.media_messages)


async def garbage_call(server: LiveServer) -> tuple[int | None, str | None]:
    """A second stream that starts, then sends only malformed messages: closed, with the reason."""
    async with websockets.connect(f"ws://127.0.0.1:{server.port}{EXOTEL.path}") as ws:
        await ws.send(json.dumps({**EXOTEL.start, "stream_sid": "MZgarbage"}))
        await asyncio.sleep(2.0)
        for _ in range(60):
            await ws.send(json.dumps({"event": "media", "media": {"payload": "!!"}}))
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass
        return ws.close_code, ws.close_reason


async def test_an_exotel_call_in_pcm_is_answered(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    garbage = asyncio.create_task(garbage_call(live_server))  # at the same time, on its own socket
    caller = await a_call_with_bad_input(live_server, EXOTEL, caplog)
    code, reason = await garbage
    assert code == 1008 and reason == "50 malformed messages in a row, the last: media payload is not valid base64"
    # Reply frames are whole 20 ms frames (multiples of 320 bytes), as Exotel requires.
    assert all(size % 320 == 0 for size in caller.payload_sizes), caller.payload_sizes
    assert all(m["stream_sid"] == EXOTEL_STREAM for m in caller.media_messages)
    await the_reply_has_words(live_server, caller)


async def test_a_plivo_call_is_answered_and_barge_in_clears_it(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caller = await a_call_with_bad_input(live_server, PLIVO, caplog)
    await the_reply_has_words(live_server, caller)
    media = {"contentType": "audio/x-mulaw", "sampleRate": 8000}
    assert all(m["event"] == "playAudio" and m["media"] | media == m["media"] for m in caller.media_messages)

    before = live_server.runtime.active_sessions
    async with call(live_server, PLIVO) as caller:
        await caller.start()
        await caller.speak(PLIVO.clip("en_dublin_q.wav") + PLIVO.silence(0.5))
        deadline = time.monotonic() + 120
        while caller.first_media_at is None and time.monotonic() < deadline:
            await caller.speak(PLIVO.silence(0.1))
        assert caller.first_media_at is not None, "no reply audio"
        await caller.speak(PLIVO.silence(0.4))  # some of the reply plays, its checkpoints come back
        interrupted_at = time.monotonic()
        await caller.speak(PLIVO.clip("en_news_movement_8k.wav")[: 8000 * 3])
        await caller.speak(PLIVO.silence(1.0))
    await wait_until_released(live_server, before)
    assert caller.clears, "speaking over the reply did not send clearAudio"
    assert caller.clears[0] - interrupted_at < 3.0  # sanity bound only, on a shared 2-core CPU
    assert [r for r in caplog.records if "truncated to the" in r.getMessage()]
