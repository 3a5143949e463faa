"""Audio between a WebRTC peer and a Realtime session.

:class:`ReplyAudioTrack` is the track we send: the synthesizer's samples, resampled
once to 48 kHz (what Opus carries), go into a queue of 20 ms frames played out at the
wall clock's pace, silence when the queue is empty or playback is held; it is the only
clock the reply audio is paced by; each frame leaves as an Opus packet encoded here.
Silence is sent only briefly: after :data:`SILENCE_HANGOVER_FRAMES` of it the track sends
nothing until there is audio to play (discontinuous transmission). The caller's side:
:mod:`cosyagent.transports.webrtc_microphone`.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, CodecContext, Packet
from av.audio.codeccontext import AudioCodecContext

from cosyagent.audio.pcm import AudioF32, StreamResampler, float_to_pcm16
from cosyagent.transports.webrtc_microphone import FRAME_SAMPLES, TRACK_RATE

_FRAME_BYTES = FRAME_SAMPLES * 2
_SILENCE = bytes(_FRAME_BYTES)
_TIME_BASE = fractions.Fraction(1, TRACK_RATE)

SILENCE_HANGOVER_FRAMES = 10
"""Silent frames sent after the agent's voice before the track goes quiet (200 ms, Opus's own
DTX hangover): enough for the caller's decoder to settle into silence and its jitter buffer to
release the last voiced frame. Then no packets until the next reply: each silent packet costs
the server and the caller per-packet work every 20 ms, while the engines compute that reply.
RTP timestamps keep real time across the gap, as with a browser's DTX or a muted sender."""

PlaybackEvent = Literal["started", "stopped"]
PlaybackListener = Callable[[PlaybackEvent, str], None]
"""Told when a response's audio starts leaving, and when it has all left (``stopped``)."""


class ReplyAudioTrack(MediaStreamTrack):
    """The agent's voice: a jitter queue of 20 ms frames, each tagged with its response id."""

    kind = "audio"

    def __init__(self, on_playback: PlaybackListener) -> None:
        super().__init__()
        self._on_playback = on_playback
        self._resampler: StreamResampler | None = None
        self._partial = b""  # resampled audio short of a whole frame
        self._frames: deque[tuple[str, bytes]] = deque()
        self._playing: str | None = None  # the response whose audio is leaving now
        self._finished: str | None = None  # a response all of whose audio is queued
        self._played: tuple[str | None, int] = (None, 0)  # the latest response to play, its frames played
        self._held = False
        self._start: float | None = None
        self._pts = 0
        self._quiet_frames = 0  # silent frames sent since the last audio
        self._audio_waiting = asyncio.Event()  # set when there may be audio to play again
        self._opus = mono_opus_encoder()

    def push(self, response_id: str, samples: AudioF32, sample_rate: int) -> None:
        """Queue reply audio of ``response_id``: the synthesizer's samples at its own rate."""
        if self._resampler is None or self._resampler.from_rate != sample_rate:
            self._resampler = StreamResampler(sample_rate, TRACK_RATE)
        resampled = self._resampler.process(samples)
        self._queue_bytes(response_id, self._partial + float_to_pcm16(resampled))

    def finish(self, response_id: str) -> None:
        """All of this response's audio is queued: pad the last frame; ``stopped`` once played."""
        held_back = self._resampler.flush() if self._resampler is not None else np.zeros(0, dtype=np.float32)
        tail = self._partial + float_to_pcm16(held_back)
        if tail:
            self._queue_bytes(response_id, tail + bytes(-len(tail) % _FRAME_BYTES))
        self._finished = response_id
        if self._playing == response_id and not self._frames:
            self._stop_playing()

    def clear(self) -> str | None:
        """Drop everything queued and any hold (barge-in). Returns the response that was cut
        off, if any."""
        cut = self._playing or (self._frames[0][0] if self._frames else None)
        self._frames.clear()
        self._partial = b""
        if self._resampler is not None:
            self._resampler.flush()
        self._playing = None
        self._held = False
        return cut

    def hold(self) -> None:
        """Play silence, keeping what is queued, until :meth:`resume`."""
        self._held = True

    def resume(self) -> None:
        self._held = False
        self._audio_waiting.set()

    def stop(self) -> None:
        super().stop()
        self._audio_waiting.set()  # a recv() waiting out a silence ends

    def played_ms(self, response_id: str) -> float:
        """How much of ``response_id``'s audio has left on the track so far."""
        played_id, frames = self._played
        return frames * 20.0 if played_id == response_id else 0.0

    def _queue_bytes(self, response_id: str, data: bytes) -> None:
        whole = len(data) - len(data) % _FRAME_BYTES
        for offset in range(0, whole, _FRAME_BYTES):
            self._frames.append((response_id, data[offset : offset + _FRAME_BYTES]))
        self._partial = data[whole:]
        if whole:
            self._audio_waiting.set()

    def _stop_playing(self) -> None:
        if self._playing is not None:
            stopped, self._playing = self._playing, None
            self._on_playback("stopped", stopped)

    async def recv(self) -> Packet[Any] | AudioFrame:
        """The next 20 ms of audio, encoded, no sooner than its time; after the silence hangover,
        once there is audio to play. Cancel-safe."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._quiet_frames >= SILENCE_HANGOVER_FRAMES and not self._audio_to_play():
            await self._wait_for_audio()
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / TRACK_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.5:  # stalled (a loaded machine): restart the clock instead of bursting
                self._start = now - self._pts / TRACK_RATE
        return opus_packet(self._opus, mono_frame(self._next_pcm(), self._pts))

    def _audio_to_play(self) -> bool:
        return bool(self._frames) and not self._held

    async def _wait_for_audio(self) -> None:
        """Send nothing until there is audio to play; then the clock restarts at the current
        time, its timestamps counting the silence, and the audio's first frame leaves at once."""
        while not self._audio_to_play():
            self._audio_waiting.clear()
            await self._audio_waiting.wait()
            if self.readyState != "live":
                raise MediaStreamError
        if self._start is not None:
            now = time.monotonic()
            self._pts = max(self._pts, int((now - self._start) * TRACK_RATE) // FRAME_SAMPLES * FRAME_SAMPLES)
            self._start = now - (self._pts + FRAME_SAMPLES) / TRACK_RATE

    def _next_pcm(self) -> bytes:
        if not self._audio_to_play():
            self._quiet_frames += 1
            return _SILENCE
        self._quiet_frames = 0
        response_id, pcm = self._frames.popleft()
        if response_id != self._playing:
            self._stop_playing()
            self._playing = response_id
            self._on_playback("started", response_id)
        played_id, frames = self._played
        self._played = (response_id, frames + 1 if played_id == response_id else 1)
        if not self._frames and self._finished == response_id:
            self._stop_playing()
        return pcm


def mono_opus_encoder() -> AudioCodecContext:
    """A libopus encoder of 20 ms mono frames at 48 kHz, 64 kbit/s (voice)."""
    codec = CodecContext.create("libopus", "w")
    codec.bit_rate = 64000  # mono speech; aiortc's own encoder sends 96 kbit/s of stereo
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = TRACK_RATE
    codec.time_base = _TIME_BASE
    codec.options = {"application": "voip"}
    return codec


def mono_frame(pcm: bytes, pts: int) -> AudioFrame:
    """20 ms of 48 kHz mono s16 ``pcm`` as a frame at ``pts`` (on the 48 kHz clock)."""
    frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
    frame.planes[0].update(pcm)
    frame.pts = pts
    frame.sample_rate = TRACK_RATE
    frame.time_base = _TIME_BASE
    return frame


def opus_packet(encoder: AudioCodecContext, frame: AudioFrame) -> Packet[Any] | AudioFrame:
    """``frame`` (20 ms, its pts on the 48 kHz clock) as one Opus packet, encoded here: aiortc
    sends a packet as it is, where a frame would cost a resampler to stereo and a hop to a worker
    thread every 20 ms."""
    packets = encoder.encode(frame)
    if len(packets) != 1:  # libopus gives one packet per 20 ms frame; were it not to, aiortc encodes
        return frame
    packet = packets[0]
    packet.pts = frame.pts
    packet.time_base = _TIME_BASE
    return packet
