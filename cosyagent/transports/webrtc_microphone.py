"""The caller's microphone on a WebRTC call: from RTP packets to the session's 16 kHz floats.

:func:`release_audio_promptly` has aiortc hand out each received frame one frame after it
arrives, not four; :func:`decode_microphone_here` has the caller's Opus decoded on the event
loop, to mono, instead of on aiortc's thread; :class:`MicrophoneConverter` resamples the decoded
frames once, straight to the 16 kHz mono floats turn detection and ASR take.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from typing import Any

import numpy as np
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from av import AudioFrame, AudioResampler, CodecContext, FFmpegError, Packet

from cosyagent.audio.pcm import AudioF32, pcm16_to_float

INPUT_RATE = 16000  # what the session's turn detection and ASR take
TRACK_RATE = 48000  # Opus's clock (RTP timestamps count it)
FRAME_SAMPLES = TRACK_RATE // 50  # 20 ms

PROMPT_PREFETCH = 1
"""Frames aiortc holds back before releasing a received one: 1 releases each when the next arrives."""
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16's (pinned) private attributes
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"

logger = logging.getLogger(__name__)


class MicrophoneConverter:
    """Decoded caller frames (any rate and layout) -> float32 mono at 16 kHz, in one resampling."""

    def __init__(self) -> None:
        # s16, not flt: libswresample normalises an integer downmix, so levels stay as the caller sent them.
        self._resampler = AudioResampler(format="s16", layout="mono", rate=INPUT_RATE)

    def convert(self, frame: AudioFrame) -> AudioF32:
        pcm = b"".join(np.asarray(out.to_ndarray(), dtype="<i2").tobytes() for out in self._resampler.resample(frame))
        return pcm16_to_float(pcm)


def release_audio_promptly(receiver: RTCRtpReceiver) -> bool:
    """Let ``receiver`` hand out each audio frame one frame after it arrives, not four.

    aiortc holds each received audio frame until four more have come (80 ms): a cushion for a
    listener's playout. Turn detection does not need it (every WebRTC turn's end and every
    barge-in waited for it), nor does a benchmark caller stamping when the agent's voice
    arrives. One frame (20 ms) still puts reordered packets back in order. aiortc has no
    setting for it, so the receiver's buffer is replaced before the first packet. Returns
    False, changing nothing, where this aiortc has no such buffer."""
    buffer = getattr(receiver, _JITTER_BUFFER, None)
    if not isinstance(buffer, JitterBuffer):
        return False
    setattr(receiver, _JITTER_BUFFER, JitterBuffer(capacity=buffer.capacity, prefetch=PROMPT_PREFETCH))
    return True


class _MicrophoneDecoder(queue.Queue[Any]):
    """Stands in for the queue to aiortc's decoder thread. aiortc decodes each received frame on
    that thread, to stereo, and hands it back to the event loop as a new task: per call, 50
    thread hops, tasks and loop wake-ups a second. Here each Opus frame is decoded where it is
    put, on the event loop (~0.03 ms), to mono (libopus decodes at 48 kHz whatever rate is asked;
    :class:`MicrophoneConverter` takes it to 16 kHz), and goes on the track's queue.
    Other codecs (PCMU, PCMA) and the stop signal pass to the thread as before; it idles until
    the receiver stops, and then ends the track."""

    def __init__(self, track_queue: asyncio.Queue[Any]) -> None:
        super().__init__()
        self._track_queue = track_queue
        self._opus = CodecContext.create("libopus", "r")
        self._opus.format = "s16"
        self._opus.layout = "mono"
        self._opus.sample_rate = TRACK_RATE

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None or item[0].name.lower() != "opus":
            super().put(item, block, timeout)
            return
        try:
            frames = self._opus.decode(Packet(item[1].data))
        except FFmpegError as exc:  # a damaged packet: skipped, the decoder kept (as aiortc does)
            logger.warning("a microphone packet failed to decode: %s", exc)
            return
        for frame in frames:
            self._track_queue.put_nowait(frame)


def decode_microphone_here(receiver: RTCRtpReceiver) -> bool:
    """Have ``receiver``'s Opus decoded on the event loop, to mono (:class:`_MicrophoneDecoder`).
    Call before the connection starts the receiver. Returns False, changing nothing, where this
    aiortc has no such queue or the receiver has started."""
    track_queue = getattr(receiver.track, "_queue", None)
    if (
        not isinstance(getattr(receiver, _DECODER_QUEUE, None), queue.Queue)
        or getattr(receiver, _DECODER_THREAD, True) is not None
        or not isinstance(track_queue, asyncio.Queue)
    ):
        return False
    setattr(receiver, _DECODER_QUEUE, _MicrophoneDecoder(track_queue))
    return True
