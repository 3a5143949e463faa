"""Phone calls over Twilio Media Streams, against the real server and the real embedded models:
a Twilio-protocol client (websockets) on 127.0.0.1 plays a real 8 kHz speech clip as the
caller, in 20 ms μ-law frames at real time, plays the reply back on a clock of its own
(echoing our marks when their audio has "played", dropping the rest on a clear, as Twilio
does), and Whisper listens to what it heard."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
from typing import Any

import numpy as np
import pytest
import websockets

from cosyagent.audio.pcm import float_to_pcm16, resample, ulaw_decode, ulaw_encode
from tests.e2e.conftest import LiveServer
from tests.support import read_clip

FRAME = 160  # 20 ms of μ-law at 8 kHz
SILENCE = b"\xff" * FRAME  # μ-law zero


def ulaw_clip(name: str) -> bytes:
    return ulaw_encode(np.frombuffer(float_to_pcm16(read_clip(name, 8000)), dtype="<i2"))


PLAYOUT_DELAY_S = 0.6  # media reaches the caller's ear this long after it reaches Twilio


class TwilioCaller:
    """Twilio's side of one stream: sends the caller's frames, plays ours at real time."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.heard = bytearray()  # reply audio, as received
        self.first_media_at: float | None = None
        self.last_media_at: float | None = None
        self.clears: list[float] = []
        self.marks_echoed = 0
        self.frame_sizes: set[int] = set()
        self._play_end = 0.0  # when the audio received so far will have played
        self._pending: list[tuple[float, str]] = []  # marks to echo, at their play time
        self._chunk = 0

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def start(self) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        body = {
            "streamSid": "MZtest",
            "callSid": "CAtest",
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await self.send({"event": "start", "sequenceNumber": "1", "start": body, "streamSid": "MZtest"})

    async def speak(self, ulaw: bytes) -> None:
        """The caller's line: frames at real time (silence is frames too, as on a phone)."""
        started = time.monotonic()
        for index in range(0, len(ulaw), FRAME):
            self._chunk += 1
            media = {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(self._chunk * 20)}
            media["payload"] = base64.b64encode(ulaw[index : index + FRAME]).decode()
            await self.send({"event": "media", "streamSid": "MZtest", "media": media})
            await asyncio.sleep(max(0.0, started + (index // FRAME + 1) * 0.02 - time.monotonic()))
            await self._echo_played()

    async def listen(self) -> None:
        async for message in self.ws:
            data = json.loads(message)
            now = time.monotonic()
            if data["event"] == "media":
                audio = base64.b64decode(data["media"]["payload"])
                self.frame_sizes.add(len(audio))
                self.heard += audio
                self.first_media_at = self.first_media_at or now
                self.last_media_at = now
                # Played after the carrier's and the handset's buffers, as on a real line.
                self._play_end = max(self._play_end, now + PLAYOUT_DELAY_S) + len(audio) / 8000
            elif data["event"] == "mark":
                self._pending.append((self._play_end, data["mark"]["name"]))
            elif data["event"] == "clear":
                self.clears.append(now)
                self._play_end = now
                dropped, self._pending = self._pending, []
                for _, name in dropped:  # Twilio echoes the marks a clear dropped, at once
                    await self.send({"event": "mark", "streamSid": "MZtest", "mark": {"name": name}})

    async def _echo_played(self) -> None:
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _, name = self._pending.pop(0)
            self.marks_echoed += 1
            await self.send({"event": "mark", "streamSid": "MZtest", "mark": {"name": name}})


@contextlib.asynccontextmanager
async def call(server: LiveServer) -> Any:
    url = f"ws://127.0.0.1:{server.port}/v1/telephony/twilio/media"
    async with websockets.connect(url, max_size=1 << 22) as ws:
        caller = TwilioCaller(ws)
        listener = asyncio.create_task(caller.listen())
        try:
            yield caller
        finally:
            await caller.send({"event": "stop", "streamSid": "MZtest", "stop": {"callSid": "CAtest"}})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener, 10)
            listener.cancel()


async def wait_until_released(server: LiveServer, before: int) -> None:
    for _ in range(100):
        if server.runtime.active_sessions == before:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{server.runtime.active_sessions} sessions still live after the call")


async def test_a_phone_call_is_heard_and_answered(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    before = live_server.runtime.active_sessions
    async with call(live_server) as caller:
        # Bad input first: each is logged and ignored, and the call goes on.
        await caller.send({"event": "media", "media": {"payload": base64.b64encode(SILENCE).decode()}})  # pre-start
        await caller.start()
        for bad in ("{not json", json.dumps({"event": "media", "media": {"payload": "%%%"}})):
            await caller.send(bad)
        await caller.send({"event": "surprise", "surprise": {}})
        await caller.send({"event": "mark", "streamSid": "MZtest", "mark": {"name": "nobody"}})
        await caller.send({"event": "dtmf", "streamSid": "MZtest", "dtmf": {"track": "inbound_track", "digit": "5"}})
        await caller.speak(ulaw_clip("en_dublin_q.wav") + SILENCE * 50)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the line stays open: silence until the reply has ended
            await caller.speak(SILENCE * 25)
            if caller.last_media_at is not None and time.monotonic() - caller.last_media_at > 2.0:
                break
        await caller.speak(SILENCE * 25)  # the last marks come back
    await wait_until_released(live_server, before)

    assert caller.first_media_at is not None, "no reply audio"
    assert caller.frame_sizes <= {FRAME} | set(range(1, FRAME)) and FRAME in caller.frame_sizes
    assert caller.marks_echoed >= 1
    assert not caller.clears
    reply = ulaw_decode(bytes(caller.heard)).astype(np.float32) / 32768.0
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
    async with call(live_server) as caller:
        await caller.start()
        await caller.speak(ulaw_clip("en_dublin_q.wav") + SILENCE * 25)
        deadline = time.monotonic() + 120
        while caller.first_media_at is None and time.monotonic() < deadline:
            await caller.speak(SILENCE * 5)
        assert caller.first_media_at is not None, "no reply audio"
        await caller.speak(SILENCE * 20)  # some of the reply plays, and its marks come back
        interrupted_at = time.monotonic()
        await caller.speak(ulaw_clip("en_news_movement_8k.wav")[: 8000 * 3])
        await caller.speak(SILENCE * 50)
    await wait_until_released(live_server, before)

    assert caller.clears, "speaking over the reply did not clear it"
    # Sanity bound only (a shared 2-core CPU); latency is measured in benchmarks/.
    assert caller.clears[0] - interrupted_at < 3.0
    # The item was truncated to what the caller heard, and the session accepted it (no error event).
    assert [r for r in caplog.records if "truncated to the" in r.getMessage()]
    assert not [r for r in caplog.records if "session error" in r.getMessage()]
