"""Client-side helpers for driving /v1/realtime with the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from tests.support import pcm16

CHUNK_MS = 100


@dataclass
class Received:
    at: float
    event: Any

    @property
    def type(self) -> str:
        return str(self.event.type)


@dataclass
class Transcript:
    """Everything a client saw, with arrival times (time.monotonic())."""

    events: list[Received] = field(default_factory=list)

    def of_type(self, kind: str) -> list[Any]:
        return [r.event for r in self.events if r.type == kind]

    def first(self, kind: str) -> Received:
        return next(r for r in self.events if r.type == kind)

    def audio(self, response_id: str | None = None) -> bytes:
        return b"".join(
            base64.b64decode(e.delta)
            for e in self.of_type("response.output_audio.delta")
            if response_id is None or e.response_id == response_id
        )


async def stream_audio(conn: AsyncRealtimeConnection, data: bytes, bytes_per_ms: float, realtime: bool = True) -> float:
    """Append ``data`` in 100 ms chunks, paced by the wall clock. Returns when the last chunk left."""
    step = int(bytes_per_ms * CHUNK_MS)
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(data), step)):
        await conn.input_audio_buffer.append(audio=base64.b64encode(data[offset : offset + step]).decode())
        if realtime:
            await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK_MS / 1000 - time.monotonic()))
    return time.monotonic()


async def stream_pcm24(conn: AsyncRealtimeConnection, audio_24k: np.ndarray, trailing_silence_s: float = 1.5) -> float:
    """Stream float audio as audio/pcm; returns the wall-clock time the speech part ended."""
    silence = np.zeros(int(24000 * trailing_silence_s), dtype=np.float32)
    started = time.monotonic()
    speech_end = started + audio_24k.size / 24000
    await stream_audio(conn, pcm16(np.concatenate([audio_24k, silence])), 48.0)
    return speech_end


async def spoken_reply(
    conn: AsyncRealtimeConnection, audio_24k: np.ndarray, trailing_silence_s: float = 1.5, timeout: float = 60.0
) -> tuple[Transcript, float]:
    """``audio_24k`` spoken in real time, then silence, while the events are read (each one's
    arrival time counts) until the reply's ``response.done``; those events, and when speech ended."""
    seen = Transcript()
    reader = asyncio.create_task(collect(conn, seen, until="response.done", timeout=timeout))
    speech_end = await stream_pcm24(conn, audio_24k, trailing_silence_s=trailing_silence_s)
    await reader
    return seen, speech_end


def said_to_its_end(response: Any) -> bool:
    """A response (the SDK's object or the event's dict) that ended on its own: ``completed``, or
    ``incomplete`` at ``max_output_tokens`` (the small caps tests set can cut a real LLM's reply;
    every word it gave was said). Not a cancelled or failed one."""
    if isinstance(response, dict):
        status, reason = response["status"], (response.get("status_details") or {}).get("reason")
    else:
        status, reason = response.status, response.status_details.reason if response.status_details else None
    return bool(status == "completed" or (status == "incomplete" and reason == "max_output_tokens"))


def finished_response(event: Any) -> bool:
    """``response.done`` for a response :func:`said_to_its_end`."""
    return bool(event.type == "response.done" and said_to_its_end(event.response))


async def collect(
    conn: AsyncRealtimeConnection,
    transcript: Transcript,
    until: str | Callable[[Any], bool],
    timeout: float = 60.0,
) -> Transcript:
    """Record events until one of type ``until`` (or one matching the predicate) arrives."""
    done = until if callable(until) else (lambda event: event.type == until)

    async def reader() -> None:
        async for event in conn:
            transcript.events.append(Received(time.monotonic(), event))
            if done(event):
                return

    await asyncio.wait_for(reader(), timeout)
    return transcript
