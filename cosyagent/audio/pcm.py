"""Sample formats, resampling and G.711: the audio plumbing every layer shares.

Pure numpy plus soxr (shipped with pipecat); no torch, no torchaudio.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

AudioF32 = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1]."""
PCM16 = npt.NDArray[np.int16]


def pcm16_to_float(data: bytes) -> AudioF32:
    if len(data) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


def float_to_pcm16(audio: AudioF32) -> bytes:
    clipped = np.clip(audio, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def frame_levels_db(audio: AudioF32, frame: int) -> npt.NDArray[np.float64]:
    """The level (dBFS, from the mean power) of each whole ``frame``-sample frame of ``audio``;
    a trailing partial frame is left out."""
    count = audio.size // frame
    frames = audio[: count * frame].astype(np.float64).reshape(count, frame)
    levels: npt.NDArray[np.float64] = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
    return levels


def leading_silence(audio: AudioF32, sample_rate: int, *, threshold_dbfs: float = -40.0, frame_ms: float = 5.0) -> int:
    """How many samples ``audio`` starts with before its first ``frame_ms`` frame louder than
    ``threshold_dbfs``; ``audio.size`` when no frame is."""
    frame = max(1, round(sample_rate * frame_ms / 1000))
    loud = np.flatnonzero(frame_levels_db(audio, frame) > threshold_dbfs)
    return int(loud[0]) * frame if loud.size else audio.size


def resample(audio: AudioF32, from_rate: int, to_rate: int) -> AudioF32:
    """One-shot high-quality resampling of a whole clip."""
    if from_rate == to_rate or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    out = soxr.resample(audio.astype(np.float32, copy=False), from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype=np.float32)


class StreamResampler:
    """Resamples a stream chunk by chunk without clicks at the chunk seams."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream = None if from_rate == to_rate else soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32")

    def process(self, chunk: AudioF32, last: bool = False) -> AudioF32:
        if self._stream is None:
            return chunk.astype(np.float32, copy=False)
        out = self._stream.resample_chunk(chunk.astype(np.float32, copy=False), last=last)
        return np.asarray(out, dtype=np.float32)

    def flush(self) -> AudioF32:
        """Return the samples held back by the filter and start a fresh stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail = self.process(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return tail


# --- G.711 (ITU-T), vectorised. The telephone formats audio/pcmu and audio/pcma, 8 kHz. ---

_ULAW_BIAS = 0x84
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def ulaw_encode(pcm: PCM16) -> bytes:
    # Works on 14-bit magnitudes like the reference implementation (and CPython's audioop).
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(x < 0, -x, x), 8159) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, mag)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((mag >> (segment + 1)) & 0x0F))
    return ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> PCM16:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def alaw_encode(pcm: PCM16) -> bytes:
    x = pcm.astype(np.int32) >> 3  # A-law works on 13-bit magnitudes
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.minimum(np.where(x < 0, -x - 1, x), 0x0FFF)
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    code = (sign | (exponent << 4) | mantissa) ^ 0x55
    return bytes(code.astype(np.uint8).tobytes())


def alaw_decode(data: bytes) -> PCM16:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, mag, -mag).astype(np.int16)
