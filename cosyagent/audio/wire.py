"""Realtime audio formats <-> the engines' float32 audio, one stateful codec per direction."""

from __future__ import annotations

from typing import Literal

import numpy as np

from cosyagent.audio.pcm import (
    AudioF32,
    StreamResampler,
    alaw_decode,
    alaw_encode,
    float_to_pcm16,
    pcm16_to_float,
    ulaw_decode,
    ulaw_encode,
)

AudioFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
FORMAT_RATES: dict[str, int] = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}


class AudioFormatError(ValueError):
    pass


def bytes_per_ms(fmt: AudioFormat) -> float:
    return FORMAT_RATES[fmt] * (2 if fmt == "audio/pcm" else 1) / 1000.0


class InputDecoder:
    """Client audio in ``fmt`` -> float32 at ``target_rate`` (the VAD/ASR rate)."""

    def __init__(self, fmt: AudioFormat, target_rate: int) -> None:
        self.format = fmt
        self._resampler = StreamResampler(FORMAT_RATES[fmt], target_rate)

    def decode(self, data: bytes) -> AudioF32:
        if self.format == "audio/pcm":
            if len(data) % 2:
                raise AudioFormatError("audio/pcm is 16-bit: the chunk has an odd number of bytes")
            samples = pcm16_to_float(data)
        else:
            pcm = ulaw_decode(data) if self.format == "audio/pcmu" else alaw_decode(data)
            samples = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        return self._resampler.process(samples)

    def flush(self) -> AudioF32:
        """The last few milliseconds the resampler still holds (call before a commit)."""
        return self._resampler.flush()


class OutputEncoder:
    """Synthesizer float32 audio at ``source_rate`` -> bytes in ``fmt``."""

    def __init__(self, fmt: AudioFormat, source_rate: int) -> None:
        self.format = fmt
        self.rate = FORMAT_RATES[fmt]
        self._resampler = StreamResampler(source_rate, self.rate)

    def encode(self, samples: AudioF32, last: bool = False) -> bytes:
        resampled = self._resampler.process(samples, last=last)
        pcm = float_to_pcm16(resampled)
        if self.format == "audio/pcm":
            return pcm
        pcm16 = np.frombuffer(pcm, dtype="<i2")
        return ulaw_encode(pcm16) if self.format == "audio/pcmu" else alaw_encode(pcm16)

    def duration_ms(self, data: bytes) -> float:
        return len(data) / bytes_per_ms(self.format)
