"""The caller's microphone on a WebRTC call: from RTP packets to the session's 16 kHz floats.

:func:`release_audio_promptly` has aiortc hand out each received frame one frame after it
arrives, not four; :func:`decode_opus_here` has the caller's Opus decoded on the event
loop, to mono, instead of on aiortc's thread, and keeps the stream continuous when the caller
sends nothing in silence (DTX, which the answer asks browsers for: :func:`asking_for_dtx`);
:class:`MicrophoneConverter` resamples the decoded frames once, straight to the 16 kHz mono
floats turn detection and ASR take.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
from typing import Any

import numpy as np
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
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

FILL_AFTER_S = 0.06
"""No packet for this long after a quiet one: the caller is in DTX, and silence is filled in at
the wall clock's pace (turn detection counts the silence it receives: a DTX sender's next packet
may be 400 ms away). Three frames: longer than the jitter between packets that keep coming."""
_FILL_EVERY_S = FRAME_SAMPLES / TRACK_RATE
_QUIET_RMS = 32768 * 10 ** (-40 / 20)
"""A decoded frame below -40 dBFS RMS is quiet: only after one does a pause in the packets count
as the caller's DTX (a sender only stops in silence); after speech it is the network or a loaded
machine, and the speech is waited for, never padded."""
_MAX_GAP = TRACK_RATE  # a timestamp jump over 1 s (a sender's restart) is filled with 1 s at most
_RTP_CLOCK = 1 << 32

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


_OPUS_RTPMAP = re.compile(r"a=rtpmap:(\d+) opus/48000", re.IGNORECASE)


def asking_for_dtx(answer_sdp: str) -> str:
    """``answer_sdp`` with ``usedtx=1`` on its Opus format: the caller's browser then sends
    nothing while its user is silent (DTX; a packet every 400 ms), where it would send 50 a
    second, each costing the server its receive path. :func:`decode_opus_here` fills the
    silence back in."""
    newline = "\r\n" if "\r\n" in answer_sdp else "\n"
    lines = answer_sdp.split(newline)
    opus = {match.group(1) for line in lines if (match := _OPUS_RTPMAP.match(line))}
    with_fmtp = {line.split()[0].removeprefix("a=fmtp:") for line in lines if line.startswith("a=fmtp:")}
    out: list[str] = []
    for line in lines:
        fmtp_of = line.split()[0].removeprefix("a=fmtp:") if line.startswith("a=fmtp:") else None
        out.append(f"{line};usedtx=1" if fmtp_of in opus and "usedtx" not in line else line)
        if (match := _OPUS_RTPMAP.match(line)) and match.group(1) not in with_fmtp:
            out.append(f"a=fmtp:{match.group(1)} usedtx=1")
    return newline.join(out)


class _OpusDecoderHere(queue.Queue[Any]):
    """Stands in for the queue to aiortc's decoder thread. aiortc decodes each received frame on
    that thread, to stereo, and hands it back to the event loop as a new task: per call, 50
    thread hops, tasks and loop wake-ups a second. Here each Opus frame is decoded where it is
    put, on the event loop (~0.03 ms), to mono (libopus decodes at 48 kHz whatever rate is
    asked), and goes on the track's queue. Other codecs (PCMU, PCMA) and the stop signal pass
    to the thread as before; it idles until the receiver stops, and then ends the track."""

    def __init__(self, track_queue: asyncio.Queue[Any]) -> None:
        super().__init__()
        self._track_queue = track_queue
        self._opus = CodecContext.create("libopus", "r")
        self._opus.format = "s16"
        self._opus.layout = "mono"
        self._opus.sample_rate = TRACK_RATE

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None or item[0].name.lower() != "opus":
            if item is None:  # the receiver stops
                self._stop()
            super().put(item, block, timeout)
            return
        try:
            frames = self._opus.decode(Packet(item[1].data))
        except FFmpegError as exc:  # a damaged packet: skipped, the decoder kept (as aiortc does)
            logger.warning("an Opus packet failed to decode: %s", exc)
            return
        for frame in frames:
            self._take(frame, item[1])

    def _take(self, frame: AudioFrame, encoded: JitterFrame) -> None:
        self._track_queue.put_nowait(frame)

    def _stop(self) -> None:
        """The receiver stops: nothing more will be put."""


class _MicrophoneDecoder(_OpusDecoderHere):
    """The caller's microphone decoded here (:class:`_OpusDecoderHere`), as a continuous stream:
    a gap in the RTP timestamps (a caller's DTX, a lost packet) becomes silence, and while no
    packet comes after a quiet one (DTX), silence is filled in at the wall clock's pace; a quiet
    frame that arrives for time already filled is dropped, so the stream keeps the caller's
    clock. :class:`MicrophoneConverter` takes it to 16 kHz."""

    def __init__(self, track_queue: asyncio.Queue[Any]) -> None:
        super().__init__(track_queue)
        self._covered: int | None = None  # RTP timestamp up to which the track has audio, heard or filled
        self._anchor = (0.0, 0)  # when the latest frame that moved _covered on arrived, and _covered then
        self._quiet = False  # that frame was quiet
        self._filler: asyncio.TimerHandle | None = None
        self._stopped = False

    def _stop(self) -> None:
        self._stopped = True
        if self._filler is not None:
            self._filler.cancel()

    def _take(self, frame: AudioFrame, encoded: JitterFrame) -> None:
        pcm = frame.to_ndarray().ravel().astype(np.float32)
        quiet = float(np.sqrt(pcm.dot(pcm) / max(1, pcm.size))) < _QUIET_RMS
        start = encoded.timestamp
        if self._covered is not None:
            ahead = _signed(start - self._covered)
            if ahead < 0 and quiet:  # silence for time already filled in
                return
            if ahead >= FRAME_SAMPLES:
                self._put_silence(min(ahead, _MAX_GAP))
            elif ahead < 0:  # speech late for time filled in: kept, the stream running that much behind
                start = self._covered
        self._track_queue.put_nowait(frame)
        self._covered = (start + frame.samples) % _RTP_CLOCK
        loop = asyncio.get_running_loop()
        self._anchor = (loop.time(), self._covered)
        self._quiet = quiet
        if self._filler is None and not self._stopped:
            self._filler = loop.call_at(loop.time() + FILL_AFTER_S, self._fill)

    def _fill(self) -> None:
        """The filler's timer: silence up to a frame before now, once no packet has come for
        :data:`FILL_AFTER_S` after a quiet frame; then every 20 ms while none comes."""
        loop = asyncio.get_running_loop()
        arrived, covered_then = self._anchor
        since = loop.time() - arrived
        if since < FILL_AFTER_S:
            self._filler = loop.call_at(arrived + FILL_AFTER_S, self._fill)
            return
        if not self._quiet or self._covered is None:  # speech went quiet on the wire: wait for it
            self._filler = loop.call_at(loop.time() + FILL_AFTER_S, self._fill)
            return
        # A frame short of now: the jitter buffer holds the latest packet until the next comes.
        due = (int(since * TRACK_RATE) // FRAME_SAMPLES - 1) * FRAME_SAMPLES
        missing = due - _signed(self._covered - covered_then)
        if missing > 0:
            self._put_silence(missing)
            self._covered = (self._covered + missing) % _RTP_CLOCK
        self._filler = loop.call_at(loop.time() + _FILL_EVERY_S, self._fill)

    def _put_silence(self, samples: int) -> None:
        frame = AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(bytes(2 * samples))
        frame.sample_rate = TRACK_RATE
        self._track_queue.put_nowait(frame)


def _signed(ticks: int) -> int:
    """An RTP timestamp difference, modulo 2**32, as the nearer of its two readings."""
    ticks %= _RTP_CLOCK
    return ticks - _RTP_CLOCK if ticks >= _RTP_CLOCK // 2 else ticks


def decode_opus_here(receiver: RTCRtpReceiver, *, fill_dtx: bool) -> bool:
    """Have ``receiver``'s Opus decoded on the event loop, to mono: with ``fill_dtx`` as a
    continuous stream, a DTX sender's silence filled in (:class:`_MicrophoneDecoder`, for a
    caller's microphone), else frame by frame as they come (:class:`_OpusDecoderHere`). Call
    before the connection starts the receiver. Returns False, changing nothing, where this
    aiortc has no such queue or the receiver has started."""
    track_queue = getattr(receiver.track, "_queue", None)
    if (
        not isinstance(getattr(receiver, _DECODER_QUEUE, None), queue.Queue)
        or getattr(receiver, _DECODER_THREAD, True) is not None
        or not isinstance(track_queue, asyncio.Queue)
    ):
        return False
    decoder = _MicrophoneDecoder(track_queue) if fill_dtx else _OpusDecoderHere(track_queue)
    setattr(receiver, _DECODER_QUEUE, decoder)
    return True
