"""A wideband phone call: Debian's baresip offers only G.722 (its ``g722`` module) and plays a
real speech clip at 16 kHz; the endpoint must answer with G.722, hear the words (the
session's own transcript of the caller) and send a spoken reply that baresip decodes and
records at 16 kHz, which Whisper transcribes back. Real server, real models, 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest

from cosyagent.agent.events import Event
from cosyagent.transports.sip_call import SipMedia
from tests.e2e.baresip_caller import BARESIP, baresip_phone, microphone_wav
from tests.e2e.test_sip_calls import SipLive, rtp_port_is_free, sip_live, wait_until_free

__all__ = ["sip_live"]  # the live server fixture, shared with the G.711 tests

G722_MODULE = Path("/usr/lib/baresip/modules/g722.so")


def heard_enough(call: SipMedia) -> bool:
    """The reply is known and 3 s of it (or all of it) went to the phone."""
    return bool(call.replies_done) and (call.packets_sent >= 150 or not call.sending)


def kinds(events: list[Event]) -> list[str]:
    return [str(e["type"]) for e in events if not str(e["type"]).endswith(".delta")]


@pytest.mark.skipif(
    BARESIP is None or not G722_MODULE.exists(), reason="baresip with g722.so is not installed (apt baresip-core)"
)
async def test_a_caller_offering_only_g722_is_answered_in_g722_and_understood(
    sip_live: SipLive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = sip_live.server.runtime.active_sessions
    microphone = tmp_path / "mic.wav"
    microphone_wav(microphone, "en_wealth_tax_q.wav", trailing_silence_s=60, rate=16000)
    home = tmp_path / "baresip"
    home.mkdir()
    events: list[Event] = []
    async with baresip_phone(home, microphone, codecs="G722") as phone:
        await phone.command("dial", f"sip:agent@127.0.0.1:{sip_live.sip.port}")
        await phone.wait_for("CALL_ESTABLISHED", 20)
        call = sip_live.sip.calls[0]
        assert (call.audio.encoding, call.audio.rate) == ("g722", 16000)
        watcher = call.watch()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (heard_enough(call)):
            try:
                event = await asyncio.wait_for(watcher.get(), 0.2)
            except TimeoutError:
                continue
            sip_log = [r.getMessage() for r in caplog.records if "sip call" in r.getMessage()]
            assert event is not None, f"the call ended or the watcher fell behind: {kinds(events)} {sip_log}"
            events.append(event)
        call.unwatch(watcher)
        await asyncio.sleep(0.5)  # the last packets reach baresip
        assert call.packets_sent > 25, f"no reply audio sent: {phone.log()[-3000:]}"
        assert call.packets_received > 100 and call.bad_packets == 0
        port = call.port
        await phone.command("hangup")
        await phone.wait_for("CALL_CLOSED", 10)
    await wait_until_free(sip_live, before)
    assert rtp_port_is_free(port)

    assert any("answered: G722 from udp 127.0.0.1" in r.getMessage() for r in caplog.records)
    assert "G722/8000" in phone.log()  # baresip's side: the negotiated codec, RTP clock 8000
    assert not [r for r in caplog.records if "session error" in r.getMessage()]
    heard_caller = [
        str(e["transcript"]) for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert heard_caller and "tax" in " ".join(heard_caller).lower(), heard_caller
    reply = phone.recording(16000)
    voiced = np.abs(reply) > 0.02
    assert voiced.sum() / 16000 >= 0.3, f"recording of {reply.size / 16000:.1f} s is silent"
    heard = await sip_live.server.runtime.asr.transcribe(reply)
    said = "".join(str(e["delta"]) for e in events if e["type"] == "response.output_audio_transcript.delta")
    words = set(re.findall(r"[a-z]{3,}", heard.text.lower()))
    # The recording is the reply itself: Whisper hears words of what the agent said.
    assert words & set(re.findall(r"[a-z]{3,}", said.lower())), (heard.text, said, kinds(events))
