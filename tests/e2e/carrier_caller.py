"""The carrier's side of a media stream, for the phone e2e tests: a websockets client on
127.0.0.1 that plays a real speech clip as the caller in the carrier's codec and message
shapes, at real time, plays the reply back on a clock of its own (echoing our marks when
their audio has "played", dropping the rest on a clear, as the carriers do), and keeps what
it heard as float32 audio for Whisper.

Each carrier is a :class:`Wire`: its socket path, ``start`` message, codec and field names.
The caller's audio is encoded here with numpy (G.711, L16) and PyAV (G.722), independently
of the server's codecs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import websockets

from benchmarks.phone_lines import g722_encode
from cosyagent.audio.pcm import AudioF32, alaw_decode, alaw_encode, float_to_pcm16, ulaw_decode, ulaw_encode
from tests.e2e.conftest import LiveServer
from tests.support import read_clip

PLAYOUT_DELAY_S = 0.6  # media reaches the caller's ear this long after it reaches the carrier


@dataclass(frozen=True)
class Wire:
    """One carrier's media stream as its caller sees it."""

    path: str
    start: dict[str, Any]
    codec: str  # "pcmu" | "pcma" | "l16-le" | "l16-be" | "g722"
    rate: int  # of the audio (16000 for G.722)
    frame_ms: int  # the caller's frames
    media: Callable[[str, int], dict[str, Any]]  # (base64 payload, chunk number) -> media message
    mark_echo: Callable[[dict[str, Any]], dict[str, Any] | None]  # our mark -> its echo (None: not a mark)
    clear_event: str
    stop: dict[str, Any] | None
    connected: dict[str, Any] | None = field(default_factory=lambda: {"event": "connected", "version": "1.0.0"})
    echoes_cleared_marks: bool = True

    @property
    def frame_bytes(self) -> int:
        per_ms = {"pcmu": 8, "pcma": 8, "g722": 8}.get(self.codec, self.rate * 2 // 1000)
        return per_ms * self.frame_ms

    def encode(self, audio: AudioF32) -> bytes:
        pcm = np.frombuffer(float_to_pcm16(audio), dtype="<i2")
        if self.codec == "pcmu":
            return ulaw_encode(pcm)
        if self.codec == "pcma":
            return alaw_encode(pcm)
        if self.codec == "g722":
            return g722_encode(pcm)
        return pcm.astype(">i2" if self.codec == "l16-be" else "<i2").tobytes()

    def decode(self, data: bytes) -> AudioF32:
        if self.codec == "g722":
            decoder = av.CodecContext.create("g722", "r")
            decoder.sample_rate, decoder.layout = 16000, "mono"
            frames = decoder.decode(av.Packet(data))
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0, np.int16)
        elif self.codec in ("pcmu", "pcma"):
            pcm = ulaw_decode(data) if self.codec == "pcmu" else alaw_decode(data)
        else:
            pcm = np.frombuffer(data, dtype=">i2" if self.codec == "l16-be" else "<i2")
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)

    def clip(self, name: str) -> bytes:
        return self.encode(read_clip(name, self.rate))

    def silence(self, seconds: float) -> bytes:
        return self.encode(np.zeros(int(self.rate * seconds), dtype=np.float32))


class CarrierCaller:
    """The carrier's side of one stream: sends the caller's frames, plays ours at real time."""

    def __init__(self, ws: websockets.ClientConnection, wire: Wire) -> None:
        self.ws = ws
        self.wire = wire
        self.heard = bytearray()  # reply audio, as received
        self.media_messages: list[dict[str, Any]] = []
        self.first_media_at: float | None = None
        self.last_media_at: float | None = None
        self.clears: list[float] = []
        self.marks_echoed = 0
        self.payload_sizes: set[int] = set()
        self._play_end = 0.0  # when the audio received so far will have played
        self._pending: list[tuple[float, dict[str, Any]]] = []  # mark echoes, at their play time
        self._chunk = 0

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def start(self) -> None:
        if self.wire.connected is not None:
            await self.send(self.wire.connected)
        await self.send(self.wire.start)

    async def speak(self, audio: bytes) -> None:
        """The caller's line: frames at real time (silence is frames too, as on a phone)."""
        started, step, period = time.monotonic(), self.wire.frame_bytes, self.wire.frame_ms / 1000
        for index in range(0, len(audio), step):
            self._chunk += 1
            await self.send(self.wire.media(base64.b64encode(audio[index : index + step]).decode(), self._chunk))
            await asyncio.sleep(max(0.0, started + (index // step + 1) * period - time.monotonic()))
            await self._echo_played()

    async def listen(self) -> None:
        async for message in self.ws:
            data = json.loads(message)
            now = time.monotonic()
            echo = self.wire.mark_echo(data)
            if data["event"] in ("media", "playAudio"):
                audio = base64.b64decode(data["media"]["payload"])
                self.media_messages.append(data)
                self.payload_sizes.add(len(audio))
                self.heard += audio
                self.first_media_at = self.first_media_at or now
                self.last_media_at = now
                # Played after the carrier's and the handset's buffers, as on a real line.
                per_s = self.wire.frame_bytes * 1000 / self.wire.frame_ms
                self._play_end = max(self._play_end, now + PLAYOUT_DELAY_S) + len(audio) / per_s
            elif echo is not None:
                self._pending.append((self._play_end, echo))
            elif data["event"] == self.wire.clear_event:
                self.clears.append(now)
                self._play_end = now
                dropped, self._pending = self._pending, []
                if self.wire.echoes_cleared_marks:  # echoed at once, unplayed
                    for _, dropped_echo in dropped:
                        await self.send(dropped_echo)

    def reply(self) -> AudioF32:
        return self.wire.decode(bytes(self.heard))

    async def _echo_played(self) -> None:
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _, echo = self._pending.pop(0)
            self.marks_echoed += 1
            await self.send(echo)


@contextlib.asynccontextmanager
async def call(server: LiveServer, wire: Wire) -> AsyncIterator[CarrierCaller]:
    url = f"ws://127.0.0.1:{server.port}{wire.path}"
    async with websockets.connect(url, max_size=1 << 22) as ws:
        caller = CarrierCaller(ws, wire)
        listener = asyncio.create_task(caller.listen())
        try:
            yield caller
        finally:
            with contextlib.suppress(websockets.ConnectionClosed):
                await caller.send(wire.stop) if wire.stop is not None else await ws.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener, 10)
            listener.cancel()


async def answer_after(caller: CarrierCaller, speech: bytes, max_s: float = 120) -> None:
    """Say ``speech``, then keep the line open (silence) until the reply has ended."""
    await caller.speak(speech + caller.wire.silence(1.0))
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        await caller.speak(caller.wire.silence(0.5))
        if caller.last_media_at is not None and time.monotonic() - caller.last_media_at > 2.0:
            break
    await caller.speak(caller.wire.silence(0.5))  # the last marks come back


async def wait_until_released(server: LiveServer, before: int) -> None:
    for _ in range(100):
        if server.runtime.active_sessions == before:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{server.runtime.active_sessions} sessions still live after the call")
