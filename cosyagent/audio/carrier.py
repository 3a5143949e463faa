"""A carrier's media-stream audio (G.711, linear PCM, G.722) <-> the Realtime session's formats.

A carrier names its codec in the stream's ``start`` message. G.711 at 8 kHz is one of the
session's own formats (``audio/pcmu``, ``audio/pcma``): it passes through untouched. Linear
PCM at 8/16/24 kHz and G.722 are carried as the session's ``audio/pcm`` (16-bit at 24 kHz),
resampled here, one stateful codec per call.

G.722 (64 kbit/s SB-ADPCM, 16 kHz audio, one byte per two samples) uses FFmpeg's LGPL
``adpcm_g722`` codec through PyAV, already a dependency for the audio containers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cosyagent.audio.pcm import StreamResampler, float_to_pcm16, pcm16_to_float

Encoding = Literal["pcmu", "pcma", "l16-be", "l16-le", "g722"]
SESSION_PCM_RATE = 24000  # the session's audio/pcm
FRAME_MS = 20  # the granularity carriers play in


class CarrierAudioError(ValueError):
    """A codec or rate this server cannot carry; the message says which and what it can."""


@dataclass(frozen=True)
class CarrierAudio:
    """One direction-independent codec of a call: ``encoding`` at ``rate`` Hz, mono."""

    encoding: Encoding
    rate: int

    def __post_init__(self) -> None:
        allowed = {"pcmu": (8000,), "pcma": (8000,), "g722": (16000,)}.get(self.encoding, (8000, 16000, 24000))
        if self.rate not in allowed:
            rates = "/".join(str(r) for r in allowed)
            raise CarrierAudioError(f"{self.encoding} at {self.rate} Hz is not supported (only {rates} Hz)")

    @property
    def session_format(self) -> str:
        """The session's audio format for this codec (both directions)."""
        return {"pcmu": "audio/pcmu", "pcma": "audio/pcma"}.get(self.encoding, "audio/pcm")

    @property
    def bytes_per_ms(self) -> float:
        if self.encoding in ("pcmu", "pcma"):
            return 8.0
        if self.encoding == "g722":
            return 8.0  # 64 kbit/s
        return self.rate * 2 / 1000.0

    @property
    def sample_bytes(self) -> int:
        """The unit a payload must be a whole number of."""
        return 2 if self.encoding.startswith("l16") else 1

    @property
    def silence(self) -> bytes:
        """One byte-unit of silence, to pad the last frame of a reply."""
        return {"pcmu": b"\xff", "pcma": b"\xd5", "g722": b"\xfa"}.get(self.encoding, b"\x00\x00")

    def frame_bytes(self, ms: int = FRAME_MS) -> int:
        return int(self.bytes_per_ms * ms)


class CarrierCodec:
    """Transcodes one call's audio: caller audio to the session's format, reply audio to
    the carrier's. Pass-through for G.711."""

    def __init__(self, audio: CarrierAudio) -> None:
        self.audio = audio
        rate = 16000 if audio.encoding == "g722" else audio.rate
        self._passthrough = audio.session_format != "audio/pcm"
        self._to_session = StreamResampler(rate, SESSION_PCM_RATE)
        self._to_wire = StreamResampler(SESSION_PCM_RATE, rate)
        self._g722: _G722 | None = _G722() if audio.encoding == "g722" else None

    def decode(self, data: bytes) -> bytes:
        """Caller audio (a whole number of samples) -> the session's format."""
        if self._passthrough:
            return data
        if self._g722 is not None:
            pcm = self._g722.decode(data)
        elif self.audio.encoding == "l16-be":
            pcm = np.frombuffer(data, dtype=">i2").astype("<i2").tobytes()
        else:
            pcm = data
        if self._to_session.from_rate == SESSION_PCM_RATE:
            return pcm
        return float_to_pcm16(self._to_session.process(pcm16_to_float(pcm)))

    def encode(self, data: bytes) -> bytes:
        """Reply audio in the session's format -> the carrier's codec."""
        if self._passthrough:
            return data
        if self._to_wire.to_rate == SESSION_PCM_RATE:
            pcm = data
        else:
            pcm = float_to_pcm16(self._to_wire.process(pcm16_to_float(data)))
        if self._g722 is not None:
            return self._g722.encode(pcm)
        if self.audio.encoding == "l16-be":
            return np.frombuffer(pcm, dtype="<i2").astype(">i2").tobytes()
        return pcm

    def finish(self) -> bytes:
        """The end of a reply: what the encoder still holds, in the carrier's codec (a partial
        G.722 frame padded with silence). The next reply starts afresh."""
        if self._passthrough or (self._to_wire.to_rate == SESSION_PCM_RATE and self._g722 is None):
            return b""
        pcm = float_to_pcm16(self._to_wire.flush())
        if self._g722 is not None:
            return self._g722.encode(pcm, pad=True)
        return np.frombuffer(pcm, dtype="<i2").astype(">i2").tobytes() if self.audio.encoding == "l16-be" else pcm


class _G722:
    """G.722 at 64 kbit/s both ways (FFmpeg's codec): 16-bit 16 kHz PCM <-> one byte per
    two samples. The encoder takes whole 20 ms frames; a partial one waits for the next call."""

    FRAME_SAMPLES = 320

    def __init__(self) -> None:
        import av  # PyAV: loaded only for a G.722 call

        self._av: Any = av
        self._encoder: Any = av.CodecContext.create("g722", "w")
        self._encoder.sample_rate, self._encoder.layout, self._encoder.format = 16000, "mono", "s16"
        self._encoder.open()
        self._decoder: Any = av.CodecContext.create("g722", "r")
        self._decoder.sample_rate, self._decoder.layout = 16000, "mono"
        self._decoder.open()
        self._pending = b""

    def decode(self, data: bytes) -> bytes:
        frames = self._decoder.decode(self._av.Packet(data)) if data else []
        return b"".join(frame.to_ndarray().astype("<i2").tobytes() for frame in frames)

    def encode(self, pcm: bytes, pad: bool = False) -> bytes:
        self._pending += pcm
        if pad:
            self._pending += bytes(-len(self._pending) % (2 * self.FRAME_SAMPLES))
        whole = len(self._pending) // (2 * self.FRAME_SAMPLES) * 2 * self.FRAME_SAMPLES
        samples, self._pending = np.frombuffer(self._pending[:whole], dtype="<i2"), self._pending[whole:]
        out = bytearray()
        for start in range(0, samples.size, self.FRAME_SAMPLES):
            frame = self._av.AudioFrame.from_ndarray(
                samples[None, start : start + self.FRAME_SAMPLES], format="s16", layout="mono"
            )
            frame.sample_rate = 16000
            for packet in self._encoder.encode(frame):
                out += bytes(packet)
        return bytes(out)
