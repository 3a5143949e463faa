"""pipecat's client protocol, as the baseline's benchmark client speaks it: protobuf frames
(``pipecat.frames.protobufs``) over one WebSocket, an RTVI ``client-ready`` message first, then
microphone audio at 16 kHz sent in real time; every frame from the bot stamped on arrival."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from pipecat.frames.protobufs import frames_pb2
from pipecat.processors.frameworks.rtvi.models import PROTOCOL_VERSION
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from cosyagent.talk import RATE, Clip

WIRE_RATE = 16_000  # pipecat's default input rate (PipelineParams.audio_in_sample_rate)
FRAME_S = 0.02
FRAME_SAMPLES = int(WIRE_RATE * FRAME_S)


class BaselineError(Exception):
    """The connection failed or ended."""


def wire_pcm(clip: Clip) -> bytes:
    """The clip as 16 kHz pcm16, what the bot's transport expects."""
    samples = np.asarray(soxr.resample(clip.samples, RATE, WIRE_RATE), dtype=np.float32)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def message_frame(payload: dict[str, Any]) -> bytes:
    frame = frames_pb2.Frame()  # type: ignore[attr-defined]
    frame.message.data = json.dumps(payload)
    return bytes(frame.SerializeToString())


def audio_frame(pcm16: bytes) -> bytes:
    frame = frames_pb2.Frame()  # type: ignore[attr-defined]
    frame.audio.audio, frame.audio.sample_rate, frame.audio.num_channels = pcm16, WIRE_RATE, 1
    return bytes(frame.SerializeToString())


@dataclass
class Received:
    """What the bot sent, stamped on arrival (``time.monotonic()``)."""

    audio: list[tuple[float, float]] = field(default_factory=list)  # (arrival, seconds of audio)
    interruptions: list[float] = field(default_factory=list)
    messages: list[tuple[float, str]] = field(default_factory=list)  # RTVI message types

    def audio_between(self, start: float, end: float = math.inf) -> list[tuple[float, float]]:
        return [(at, seconds) for at, seconds in self.audio if start < at <= end]


class BotSocket:
    """The WebSocket to one bot pipeline: a reader task stamps every frame as it arrives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received = Received()
        self.closed: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name="baseline-reader")

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                at = time.monotonic()
                frame = frames_pb2.Frame.FromString(raw if isinstance(raw, bytes) else raw.encode())  # type: ignore[attr-defined]
                kind = frame.WhichOneof("frame")
                if kind == "audio":
                    rate = frame.audio.sample_rate or 24_000
                    self.received.audio.append(
                        (at, len(frame.audio.audio) / (2 * rate * max(1, frame.audio.num_channels)))
                    )
                elif kind == "interruption":
                    self.received.interruptions.append(at)
                elif kind == "message":
                    with contextlib.suppress(ValueError, AttributeError):
                        self.received.messages.append((at, str(json.loads(frame.message.data).get("type"))))
                self._changed.set()
            self.closed = "the bot closed the connection"
        except ConnectionClosed as exc:
            self.closed = f"the connection to the bot was lost: {exc}"
        finally:
            self._changed.set()

    async def wait_for(self, ready: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``ready()`` (checked on every frame, and every 50 ms); False at ``deadline``."""
        while not ready():
            if self.closed:
                raise BaselineError(self.closed)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._changed.wait()
        return True

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Microphone:
    """Sends 20 ms frames of 16 kHz audio, each once its last sample has been "spoken", and
    silence while nothing is queued; sample ``n`` of the stream is spoken at ``start + n / 16000``."""

    def __init__(self, bot: BotSocket) -> None:
        self._bot = bot
        self._t0 = 0.0
        self._next = 0  # the frame to send next; the queue starts at its first sample
        self._queue = bytearray()
        self._task: asyncio.Task[None] | None = None
        self.max_send_lag_s = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="baseline-microphone")

    def play(self, pcm16: bytes) -> float:
        """Queue 16 kHz pcm16 after anything queued; returns when its first sample is spoken."""
        queued_end = self._next * FRAME_SAMPLES + len(self._queue) // 2
        start = max(math.ceil((time.monotonic() - self._t0) * WIRE_RATE), queued_end)
        self._queue.extend(bytes(2 * (start - queued_end)))
        self._queue.extend(pcm16)
        return self._t0 + start / WIRE_RATE

    async def _run(self) -> None:
        size = 2 * FRAME_SAMPLES
        while True:
            due = self._t0 + (self._next + 1) * FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            chunk = bytes(self._queue[:size]).ljust(size, b"\0")
            del self._queue[:size]
            self._next += 1
            try:
                await self._bot.ws.send(audio_frame(chunk))
            except ConnectionClosed:
                return  # the reader reports it
            self.max_send_lag_s = max(self.max_send_lag_s, time.monotonic() - due)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def client_ready() -> dict[str, Any]:
    return {
        "label": "rtvi-ai",
        "type": "client-ready",
        "id": uuid.uuid4().hex[:8],
        "data": {"version": PROTOCOL_VERSION, "about": {"library": "cosyagent-bench"}},
    }
