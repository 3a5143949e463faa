"""Call control of the SIP endpoint in the OpenAI style, against the real server and models on
127.0.0.1: a real webhook receiver (uvicorn) gets ``realtime.call.incoming``, the official
openai SDK accepts, rejects, transfers and hangs up calls and follows one over the sideband
socket; Debian's baresip is the caller, or the raw-socket SIP peer of test_sip_calls for
what no phone sends."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile as sf
import websockets

from tests.e2e.baresip_caller import BARESIP, baresip_phone
from tests.e2e.call_control_peers import ACCEPT_TIMEOUT_S, SECRET, ControlLive, control_live
from tests.e2e.conftest import configured
from tests.e2e.realtime_client import said_to_its_end
from tests.e2e.test_sip_calls import SipTestPeer, offer, rtp_port_is_free

INSTRUCTIONS = "You are the call-control test agent. Answer in one short sentence."
GREETING = "Greet the caller warmly in two full sentences and ask how you can help today."


@pytest.fixture(scope="module")
async def live() -> AsyncIterator[ControlLive]:
    async with control_live() as running:
        yield running


async def wait_until_free(live: ControlLive, before: int) -> None:
    for _ in range(100):
        idle = not live.sip.calls and not live.sip.control.ringing
        if live.server.runtime.active_sessions == before and idle:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{live.server.runtime.active_sessions} sessions, {len(live.sip.calls)} calls still live")


def call_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("sip-rtc_")]


async def ring(live: ControlLive, peer: SipTestPeer, call: str, branch: str) -> str:
    """INVITE from the raw peer: 100, 180, and the webhook's event; returns the API call id."""
    peer.send(peer.request("INVITE", call, 1, branch, offer(4000, "0 101")))
    trying, ringing = await peer.receive(), await peer.receive()
    assert trying is not None and trying.status == 100
    assert ringing is not None and ringing.status == 180 and "tag=" in (ringing.header("To") or "")
    assert ringing.header("Contact") == f"<sip:127.0.0.1:{live.sip.port}>"
    delivery = await live.hook.next()
    event = live.sdk().webhooks.unwrap(delivery.body, delivery.headers, secret=SECRET)
    assert event.type == "realtime.call.incoming"
    sip_headers = {h.name: h.value for h in event.data.sip_headers}
    assert sip_headers["Call-ID"] == call and sip_headers["From"] == "<sip:peer@127.0.0.1>;tag=peer1"
    return event.data.call_id


async def test_webhook_faults_refuse_the_call_with_a_clear_status(
    live: ControlLive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = live.server.runtime.active_sessions
    peer = SipTestPeer(live.sip.port)
    try:
        live.hook.status = 500
        call_id = await ring(live, peer, "cc-500", "w1")
        refused = await peer.final()
        assert (refused.status, refused.reason) == (500, "the webhook answered 500 Internal Server Error")

        live.hook.status, live.hook.delay_s = 200, ACCEPT_TIMEOUT_S + 2
        started = time.monotonic()
        await ring(live, peer, "cc-slow", "w2")
        refused = await peer.final(ACCEPT_TIMEOUT_S + 3)
        assert (refused.status, refused.reason) == (480, f"The webhook did not answer in {ACCEPT_TIMEOUT_S:g} s")
        assert ACCEPT_TIMEOUT_S - 0.5 < time.monotonic() - started < ACCEPT_TIMEOUT_S + 2

        live.hook.delay_s = 0.0
        await ring(live, peer, "cc-nobody", "w3")  # the webhook takes it; nobody accepts
        refused = await peer.final(ACCEPT_TIMEOUT_S + 3)
        assert (refused.status, refused.reason) == (480, f"No accept or reject in {ACCEPT_TIMEOUT_S:g} s")
        peer.send(peer.request("INVITE", "cc-nobody", 1, "w3", offer(4000, "0 101")))  # retransmitted
        assert (await peer.final()).status == 480  # the same answer, no second ring
        assert not live.hook.deliveries

        with pytest.raises(openai.NotFoundError) as gone:
            await live.sdk().realtime.calls.accept(call_id, type="realtime")
        assert gone.value.code == "call_not_found"
        assert gone.value.body == {
            "message": f"no ringing call {call_id!r}: it ended or never existed",
            "type": "invalid_request_error",
            "code": "call_not_found",
            "param": None,
        }
    finally:
        live.hook.status, live.hook.delay_s = 200, 0.0
        peer.close()
    await wait_until_free(live, before)
    messages = [r.getMessage() for r in caplog.records]
    assert any(re.search(r"refused with 500: the webhook answered 500", m) for m in messages)
    assert any(re.search(r"refused with 480: the webhook did not answer in 4 s", m) for m in messages)
    assert any(re.search(r"refused with 480: no accept or reject in 4 s", m) for m in messages)


async def test_reject_cancel_and_bad_requests_while_ringing(live: ControlLive) -> None:
    before = live.server.runtime.active_sessions
    sdk = live.sdk()
    peer = SipTestPeer(live.sip.port)
    try:
        call_id = await ring(live, peer, "cc-reject", "r1")
        with pytest.raises(openai.BadRequestError, match="status_code must be a SIP error status 400-699, got 200"):
            await sdk.realtime.calls.reject(call_id, status_code=200)
        with pytest.raises(openai.BadRequestError, match=r"Unknown parameter: 'session\.bogus'") as bogus:
            await sdk.realtime.calls.accept(call_id, type="realtime", extra_body={"bogus": 1})
        assert bogus.value.param == "session.bogus"
        with pytest.raises(openai.ConflictError, match="is still ringing: accept it before it can be transferred"):
            await sdk.realtime.calls.refer(call_id, target_uri="sip:somebody@127.0.0.1")
        await sdk.realtime.calls.reject(call_id, status_code=486)
        refused = await peer.final()
        assert (refused.status, refused.reason) == (486, "Busy Here")
        peer.send(peer.request("ACK", "cc-reject", 1, "r1", To=refused.header("To") or ""))
        with pytest.raises(openai.NotFoundError):
            await sdk.realtime.calls.reject(call_id)

        call_id = await ring(live, peer, "cc-cancel", "c1")
        peer.send(peer.request("CANCEL", "cc-cancel", 1, "c1"))
        answers = {(await peer.final()).status, (await peer.final()).status}
        assert answers == {200, 487}
        with pytest.raises(openai.NotFoundError):
            await sdk.realtime.calls.accept(call_id, type="realtime")

        call_id = await ring(live, peer, "cc-default", "d1")
        await sdk.realtime.calls.reject(call_id)  # no status_code: 603
        assert (await peer.final()).status == 603

        call_id = await ring(live, peer, "cc-hangup", "h1")
        with pytest.raises(websockets.InvalidStatus) as ringing:  # no session to follow yet
            async with websockets.connect(f"ws://127.0.0.1:{live.server.port}/v1/realtime?call_id={call_id}"):
                pass
        assert ringing.value.response.status_code == 409
        await sdk.realtime.calls.hangup(call_id)  # while it rings: 603
        assert (await peer.final()).status == 603
    finally:
        peer.close()
    for route in ("accept", "reject", "refer", "hangup"):
        with pytest.raises(openai.NotFoundError) as unknown:
            await sdk.post(
                f"/realtime/calls/rtc_nope/{route}", body={"type": "realtime", "target_uri": "sip:x@y"}, cast_to=object
            )
        assert unknown.value.code == "call_not_found", route
        if route != "hangup":  # the route WebRTC calls share keeps the SDK's retries
            assert unknown.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with websockets.connect(f"ws://127.0.0.1:{live.server.port}/v1/realtime?call_id=rtc_nope"):
            pass
    assert denied.value.response.status_code == 404
    error = json.loads(denied.value.response.body or b"{}")["error"]
    assert error["code"] == "call_not_found" and "rtc_nope" in error["message"]
    await wait_until_free(live, before)


def accepting_in_the_handler(live: ControlLive, accepted: list[str]) -> Callable[[bytes], Awaitable[None]]:
    """A webhook handler that accepts each ringing call before it answers the POST (as OpenAI's
    sample does), noting the call ids in ``accepted``."""
    sdk = live.sdk()

    async def accept(body: bytes) -> None:
        call_id = json.loads(body)["data"]["call_id"]
        await sdk.realtime.calls.accept(call_id, type="realtime", instructions=INSTRUCTIONS)
        accepted.append(call_id)

    return accept


async def test_accept_from_inside_the_webhook_handler_answers_the_call(live: ControlLive) -> None:
    """The backend accepts before it answers the webhook's POST (OpenAI's sample does)."""
    before = live.server.runtime.active_sessions
    accepted: list[str] = []
    live.hook.on_event = accepting_in_the_handler(live, accepted)
    peer = SipTestPeer(live.sip.port)
    try:
        peer.send(peer.request("INVITE", "cc-inline", 1, "n1", offer(4000, "8 101")))
        ok = await peer.final()
        assert ok.status == 200 and "a=rtpmap:8 PCMA/8000" in ok.body.decode()
        ringing = live.hook.deliveries.pop()
        assert json.loads(ringing.body)["data"]["call_id"] == accepted[0]
        dialog = live.sip.dialog(accepted[0])
        assert dialog is not None and dialog.local_tag in (ok.header("To") or "")  # the 180's tag
        peer.send(peer.request("ACK", "cc-inline", 1, "n2", To=ok.header("To") or ""))
        peer.send(peer.request("BYE", "cc-inline", 2, "n3", To=ok.header("To") or ""))
        assert (await peer.final()).status == 200
    finally:
        live.hook.on_event = None
        peer.close()
    await wait_until_free(live, before)


async def test_a_call_the_app_accepts_is_the_apps_to_open_even_with_greet_phone_calls(live: ControlLive) -> None:
    """``realtime.greet_phone_calls`` opens calls answered at once; with a webhook the app accepts
    the call and opens it itself (sideband ``response.create``), so the server sends no greeting."""
    runtime, before = live.server.runtime, live.server.runtime.active_sessions
    live.hook.on_event = accepting_in_the_handler(live, [])
    peer = SipTestPeer(live.sip.port)
    try:
        with configured(runtime, "realtime", greet_phone_calls=True):
            peer.send(peer.request("INVITE", "cc-greet", 1, "g1", offer(4000, "8 101")))
            ok = await peer.final()
            assert ok.status == 200
            peer.send(peer.request("ACK", "cc-greet", 1, "g2", To=ok.header("To") or ""))
            live.hook.deliveries.clear()
            call = live.sip.calls[0]
            await asyncio.sleep(4.0)  # a greeting starts within ~1 s of the answer on this stack
            assert call.packets_sent == 0 and call.replies_done == 0, "the server greeted a call its app accepted"
            peer.send(peer.request("BYE", "cc-greet", 2, "g3", To=ok.header("To") or ""))
            assert (await peer.final()).status == 200
    finally:
        live.hook.on_event = None
        peer.close()
    await wait_until_free(live, before)


def silent_microphone(path: Path, seconds: float) -> None:
    sf.write(path, np.zeros(int(8000 * seconds), np.float32), 8000, subtype="PCM_16")


@pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (make test installs baresip-core)")
async def test_baresip_call_accepted_followed_over_the_sideband_and_hung_up_mid_reply(
    live: ControlLive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before, tasks_before = live.server.runtime.active_sessions, call_tasks()
    sdk = live.sdk()
    microphone = tmp_path / "mic.wav"
    silent_microphone(microphone, 120)
    home = tmp_path / "baresip"
    home.mkdir()
    async with baresip_phone(home, microphone) as phone:
        await phone.command("dial", f"sip:agent@127.0.0.1:{live.sip.port}")
        delivery = await live.hook.next(20)
        event = sdk.webhooks.unwrap(delivery.body, delivery.headers, secret=SECRET)
        call_id = event.data.call_id
        headers = [(h.name, h.value) for h in event.data.sip_headers]
        assert [name for name, _ in headers][:1] == ["Via"] and ("Content-Type", "application/sdp") in headers
        assert any(name == "From" and "sip:caller@127.0.0.1" in value for name, value in headers)
        await phone.wait_for("CALL_RINGING", 10)
        await sdk.realtime.calls.accept(call_id, type="realtime", instructions=INSTRUCTIONS, max_output_tokens=40)
        await phone.wait_for("CALL_ESTABLISHED", 10)
        with pytest.raises(openai.ConflictError, match="was already accepted"):
            await sdk.realtime.calls.accept(call_id, type="realtime")
        call = live.sip.calls[0]

        async with sdk.realtime.connect(call_id=call_id, max_retries=0) as sideband:
            await sideband.session.update(session={"type": "realtime", "max_output_tokens": 60})
            updated = await anext(e async for e in sideband if e.type == "session.updated")
            assert updated.session.instructions == INSTRUCTIONS  # from the accept
            assert updated.session.max_output_tokens == 60  # from the sideband
            assert updated.session.audio.output.format.type == "audio/pcmu"  # the phone leg's codec
            await phone.command("sndcode", "7")  # an RFC 4733 key press
            key = await anext(e async for e in sideband if e.type == "input_audio_buffer.dtmf_event_received")
            assert key.event == "7" and abs(key.received_at - time.time()) < 30
            await sideband.response.create(response={"instructions": GREETING})
            kinds = []
            async for server_event in sideband:
                kinds.append(server_event.type)
                if server_event.type == "response.done":
                    break
            assert "response.output_audio.delta" in kinds and "response.output_audio_transcript.done" in kinds
            while call.sending:
                await asyncio.sleep(0.1)
            assert call.packets_sent > 25

            # A second reply, hung up as its first audio arrives.
            await sideband.response.create()
            async for server_event in sideband:
                if server_event.type == "response.output_audio.delta":
                    break
            port = call.port
            await sdk.realtime.calls.hangup(call_id)
            await phone.wait_for("CALL_CLOSED", 10)
            async with asyncio.timeout(5):  # the sideband closes with the call (1000)
                rest = [e.type async for e in sideband]
            assert "error" not in rest
        with pytest.raises(openai.NotFoundError):
            await sdk.realtime.calls.hangup(call_id)
    await wait_until_free(live, before)
    assert rtp_port_is_free(port)
    for _ in range(50):  # the BYE's transaction ends with its 200
        if call_tasks() == tasks_before:
            break
        await asyncio.sleep(0.1)
    assert call_tasks() == tasks_before
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"sip call {call_id}: a sideband client attached" in m for m in messages)
    assert any(f"sip call {call_id} hung up by the API" in m for m in messages)
    assert any(f"sip call {call_id}: hanging up (BYE)" in m for m in messages)
    reply = phone.recording()
    assert (np.abs(reply) > 0.02).sum() / 8000 >= 0.3, "the caller heard no reply"


@pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (make test installs baresip-core)")
async def test_refer_transfers_the_baresip_caller_to_another_sip_uri(
    live: ControlLive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The transfer target is this same endpoint: baresip takes the REFER (202), calls the
    target (a second webhook event), reports the outcome in NOTIFYs, and the first leg ends."""
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = live.server.runtime.active_sessions
    sdk = live.sdk()
    microphone = tmp_path / "mic.wav"
    silent_microphone(microphone, 120)
    home = tmp_path / "baresip"
    home.mkdir()
    async with baresip_phone(home, microphone) as phone:
        await phone.command("dial", f"sip:agent@127.0.0.1:{live.sip.port}")
        first = sdk.webhooks.unwrap((d := await live.hook.next(20)).body, d.headers, secret=SECRET).data.call_id
        await sdk.realtime.calls.accept(first, type="realtime", instructions=INSTRUCTIONS)
        await phone.wait_for("CALL_ESTABLISHED", 10)
        with pytest.raises(openai.BadRequestError, match="target_uri must be a sip:, sips: or tel: URI"):
            await sdk.realtime.calls.refer(first, target_uri="http://example.com")
        target = f"sip:transfer@127.0.0.1:{live.sip.port}"
        await sdk.realtime.calls.refer(first, target_uri=target)
        delivery = await live.hook.next(20)
        second_event = sdk.webhooks.unwrap(delivery.body, delivery.headers, secret=SECRET)
        second = second_event.data.call_id
        assert second != first
        assert any(h.name == "To" and "sip:transfer@127.0.0.1" in h.value for h in second_event.data.sip_headers)
        await sdk.realtime.calls.accept(second, type="realtime", instructions=INSTRUCTIONS)
        for _ in range(100):  # the NOTIFY with 200 ends the first leg
            if live.sip.dialog(first) is None:
                break
            await asyncio.sleep(0.1)
        assert live.sip.dialog(first) is None and live.sip.dialog(second) is not None
        await sdk.realtime.calls.hangup(second)
    await wait_until_free(live, before)
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"sip call {first}: the caller took the transfer (202 Accepted)" in m for m in messages)
    assert any(re.search(rf"sip call {first}: transfer to {re.escape(target)}: SIP/2.0 200 OK", m) for m in messages)
    assert any(f"sip call {first}: transferred; hanging up the agent's leg" in m for m in messages)


@pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (make test installs baresip-core)")
async def test_baresip_puts_the_agent_on_hold_and_resumes(
    live: ControlLive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """baresip's hold is a re-INVITE with a=sendonly: the agent answers recvonly and sends
    nothing; a reply asked for meanwhile waits, and plays after the resume (a=sendrecv)."""
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = live.server.runtime.active_sessions
    sdk = live.sdk()
    microphone = tmp_path / "mic.wav"
    silent_microphone(microphone, 120)
    home = tmp_path / "baresip"
    home.mkdir()
    async with baresip_phone(home, microphone) as phone:
        await phone.command("dial", f"sip:agent@127.0.0.1:{live.sip.port}")
        call_id = sdk.webhooks.unwrap((d := await live.hook.next(20)).body, d.headers, secret=SECRET).data.call_id
        await sdk.realtime.calls.accept(call_id, type="realtime", instructions=INSTRUCTIONS, max_output_tokens=40)
        await phone.wait_for("CALL_ESTABLISHED", 10)
        call = live.sip.calls[0]
        await phone.command("hold")
        async with asyncio.timeout(10):
            while not call.on_hold:
                await asyncio.sleep(0.05)
        sent_before = call.packets_sent
        async with sdk.realtime.connect(call_id=call_id, max_retries=0) as sideband:
            await sideband.response.create()
            done = await anext(e async for e in sideband if e.type == "response.done")
            assert said_to_its_end(done.response)
            await asyncio.sleep(0.5)
            assert call.packets_sent == sent_before and call.sending  # held: the reply waits
            await phone.command("resume")
            async with asyncio.timeout(10):
                while call.on_hold:
                    await asyncio.sleep(0.05)
            async with asyncio.timeout(60):
                while call.sending:
                    await asyncio.sleep(0.1)
            assert call.packets_sent > sent_before + 25
        await sdk.realtime.calls.hangup(call_id)
        await phone.wait_for("CALL_CLOSED", 10)
    await wait_until_free(live, before)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith(": on hold: the agent stops sending") for m in messages)
    assert any(m.endswith(": resumed") for m in messages)
    # baresip's own account: our RTP reached it only after the resume (its sndfile dump does
    # not restart after a hold, so its log is the witness here).
    log = phone.log()
    held, resumed = log.index("cmd='hold'"), log.index("cmd='resume'")
    heard = [m.start() for m in re.finditer(r"incoming rtp for 'audio' established, receiving from 127\.0\.0\.1", log)]
    assert heard and all(at > resumed for at in heard), (held, resumed, heard)
