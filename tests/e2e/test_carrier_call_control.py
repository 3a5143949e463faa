"""Call control of carrier media-stream calls, against the real server and models on 127.0.0.1:
a Twilio-protocol caller (tests/e2e/carrier_caller.py) plays a real question in μ-law; the
official openai SDK follows the call over the sideband (``WS /v1/realtime?call_id=<CallSid>``),
steers it and hangs it up (``POST /v1/realtime/calls/{id}/hangup``); accept, reject and refer
are refused with the reason on a carrier's call."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
from typing import Any

import openai
import pytest
import websockets

from tests.e2e.carrier_caller import Wire, call, wait_until_released
from tests.e2e.conftest import LiveServer
from tests.e2e.test_carrier_calls import TELNYX
from tests.e2e.test_twilio_calls import TWILIO

CALL_SID = "CA5a1f0c0ntr01000000000000000001"  # what Twilio's voice webhook named the call


def twilio_wire(call_sid: str) -> Wire:
    start: dict[str, Any] = copy.deepcopy(TWILIO.start)
    start["start"]["callSid"] = call_sid
    return dataclasses.replace(TWILIO, start=start)


def sdk(server: LiveServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def stream_tasks() -> list[str]:
    names = (t.get_name() for t in asyncio.all_tasks())
    return [name for name in names if name.endswith(("-twilio-reader", "-twilio-writer", "-telnyx-reader"))]


async def wait_for_sessions(server: LiveServer, count: int) -> None:
    """The stream's session is admitted (its call is registered before that)."""
    async with asyncio.timeout(10):
        while server.runtime.active_sessions < count:
            await asyncio.sleep(0.02)


async def test_a_twilio_call_is_followed_steered_and_hung_up_by_its_call_sid(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    await wait_until_released(live_server, 0)  # an earlier test's session still closing would skew the count
    before, tasks_before = 0, stream_tasks()
    client = sdk(live_server)
    wire = twilio_wire(CALL_SID)
    async with call(live_server, wire) as caller:
        await caller.start()
        await wait_for_sessions(live_server, before + 1)
        async with client.realtime.connect(call_id=CALL_SID) as sideband:
            # Steering: no reply of its own after the caller's turn, short replies.
            detection = {"type": "server_vad", "create_response": False}
            update = {"type": "realtime", "max_output_tokens": 25, "audio": {"input": {"turn_detection": detection}}}
            await sideband.session.update(session=update)  # type: ignore[arg-type]
            updated = await anext(e async for e in sideband if e.type == "session.updated")
            assert updated.session.audio.output.format.type == "audio/pcmu"  # the call's codec
            await caller.send(
                {"event": "dtmf", "streamSid": "MZtest", "dtmf": {"track": "inbound_track", "digit": "7"}}
            )
            key = await anext(e async for e in sideband if e.type == "input_audio_buffer.dtmf_event_received")
            assert key.event == "7"

            speaking = asyncio.create_task(caller.speak(wire.clip("en_dublin_q.wav") + wire.silence(1.5)))
            async with asyncio.timeout(60):
                heard = await anext(
                    e async for e in sideband if e.type == "conversation.item.input_audio_transcription.completed"
                )
            await speaking
            assert "dublin" in heard.transcript.lower(), heard.transcript
            assert caller.first_media_at is None  # create_response false: the agent waited

            await sideband.response.create(response={"instructions": "Say hello to the caller in five words."})
            kinds = []
            async with asyncio.timeout(60):
                async for server_event in sideband:
                    kinds.append(server_event.type)
                    if server_event.type == "response.done":
                        break
            assert "response.output_audio.delta" in kinds and "error" not in kinds
            async with asyncio.timeout(10):  # the reply reached the carrier's socket
                while caller.first_media_at is None:
                    await asyncio.sleep(0.05)

            await client.realtime.calls.hangup(CALL_SID)
            async with asyncio.timeout(5):  # the carrier's socket is closed with 1000, then the sideband too
                await caller.ws.wait_closed()
                rest = [e.type async for e in sideband]
            assert caller.ws.close_code == 1000
            assert "error" not in rest
    await wait_until_released(live_server, before)
    assert stream_tasks() == tasks_before
    with pytest.raises(openai.NotFoundError):  # it is gone from call control
        await client.realtime.calls.hangup(CALL_SID)
    messages = [r.getMessage() for r in caplog.records]
    assert f"twilio call {CALL_SID}: a sideband client attached" in messages
    assert f"twilio call {CALL_SID} hung up by the API" in messages
    assert any(m.startswith(f"twilio call {CALL_SID}: the sideband client left (ended)") for m in messages)


async def test_carrier_call_control_errors(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """Unknown ids are 404; accept, reject and refer on a carrier's call are 409 with the reason;
    a second stream for a live call id is served, and hang-up closes the first with 1000."""
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = live_server.runtime.active_sessions
    client = sdk(live_server)
    for route in ("accept", "reject", "refer", "hangup"):
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.post(
                f"/realtime/calls/CAnope/{route}", body={"target_uri": "tel:+15551234567"}, cast_to=object
            )
        assert unknown.value.code == "call_not_found", route
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with websockets.connect(f"ws://127.0.0.1:{live_server.port}/v1/realtime?call_id=CAnope"):
            pass
    assert denied.value.response.status_code == 404
    assert json.loads(denied.value.response.body or b"{}")["error"]["code"] == "call_not_found"

    call_id = TELNYX.start["start"]["call_control_id"]  # "v3:...": Telnyx's id, as its webhooks name it
    async with call(live_server, TELNYX) as caller:
        await caller.start()
        await wait_for_sessions(live_server, before + 1)
        with pytest.raises(openai.ConflictError) as refer:
            await client.realtime.calls.refer(call_id, target_uri="tel:+15551234567")
        assert refer.value.code == "unsupported_for_carrier_call"
        assert "is a telnyx media-stream call: transfer it with telnyx's own call-control API" in refer.value.message
        assert refer.value.response.headers["x-should-retry"] == "false"
        with pytest.raises(openai.ConflictError, match="telnyx answered it with the stream its webhook asked for"):
            await client.realtime.calls.accept(call_id, type="realtime")
        with pytest.raises(openai.ConflictError, match="there is nothing to reject"):
            await client.realtime.calls.reject(call_id)

        async with call(live_server, TELNYX) as second:  # a second stream of the same call: served
            await second.start()
            await wait_for_sessions(live_server, before + 2)
            await client.realtime.calls.hangup(call_id)  # reaches the first stream
            async with asyncio.timeout(5):
                await caller.ws.wait_closed()
            assert caller.ws.close_code == 1000 and second.ws.close_code is None
    await wait_until_released(live_server, before)
    messages = [r.getMessage() for r in caplog.records]
    assert f"telnyx call {call_id} hung up by the API" in messages
    assert any(m.endswith("is live already (telnyx): call control reaches the first stream only") for m in messages)
